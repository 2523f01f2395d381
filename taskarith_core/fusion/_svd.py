"""Shared pieces of the SVD-based merges: which tensors get an SVD, and the merge skeleton.

Both TSV-M and Iso-C/CTS work on each 2-D tensor (a weight matrix) on its own and average the task
vectors of every other tensor, then scale the merged update by one coefficient, so each streams
one tensor name at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .params import Param

__all__ = ["orthogonalise", "svd_merge", "update_scaling"]


def update_scaling() -> Param:
    """The papers' alpha: one coefficient on the whole merged update (named lam like the others,
    so a sweep over it reuses the update)."""
    return Param(
        "lam", "float", 1.0, "scaling coefficient alpha of the merged update", symbol="α", low=0.0
    )


def orthogonalise(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (or rows): U V^T of matrix = U S V^T."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u @ vh


def svd_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    matrix_rule: Callable[[list[torch.Tensor]], torch.Tensor],
    lam: float,
) -> StateDict:
    """theta_pre + lam * (matrix_rule(taus) on 2-D tensors, the mean of the taus elsewhere)."""

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        if taus[0].dim() == 2:
            merged = matrix_rule(taus)
        else:
            merged = taus[0].clone()
            for index, tau in enumerate(taus[1:], start=2):
                merged += (tau - merged) / index  # running mean, as the reference code does
        return merged * lam

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)
