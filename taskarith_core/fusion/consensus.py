"""Consensus merging with TALL masks (Wang et al. 2024).

tau_MTL = sum_t tau_t; TALL mask m_t = |tau_t| >= lambda_t |tau_MTL - tau_t|; the consensus mask
keeps the entries at least ``agreement`` tasks claim (the paper's k);
merged = theta_pre + lambda * consensus * tau_MTL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError
from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .params import Param, scaling
from .spec import MethodSpec

__all__ = ["SPEC", "consensus_merge", "tall_masks_for_tensor"]


def tall_masks_for_tensor(
    taus: Sequence[torch.Tensor], tall_lambda: float | Sequence[float]
) -> list[torch.Tensor]:
    """Per-task TALL masks of one tensor."""
    lambdas = [tall_lambda] * len(taus) if isinstance(tall_lambda, int | float) else tall_lambda
    total = torch.stack(list(taus)).sum(0)
    return [tau.abs() >= lt * (total - tau).abs() for tau, lt in zip(taus, lambdas)]


def consensus_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    lam: float = 0.4,
    tall_lambda: float | Sequence[float] = 0.4,
    agreement: int = 2,
) -> StateDict:
    """Task arithmetic restricted to the entries that at least ``agreement`` TALL masks select."""

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        masks = tall_masks_for_tensor(taus, tall_lambda)
        votes = torch.stack(masks).sum(0)
        total = torch.stack(taus).sum(0)
        return lam * total * (votes >= agreement)

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


def _at_most_n_tasks(params: Mapping[str, Any], n_tasks: int) -> None:
    """An entry cannot be claimed by more tasks than there are."""
    if params["agreement"] > n_tasks:
        raise InputError(
            f"consensus agreement={params['agreement']} must be a whole number of tasks in "
            f"[1, {n_tasks}]"
        )


SPEC = MethodSpec(
    consensus_merge,
    (
        scaling(0.4),
        Param(
            "tall_lambda",
            "float",
            0.4,
            "TALL mask threshold: keep |tau_t| >= lambda_t |tau_MTL - tau_t|",
            symbol="λ_t",
            low=0.0,
            per_task=True,
        ),
        Param(
            "agreement",
            "int",
            2,
            "entries kept where at least this many TALL masks agree",
            symbol="k",
            low=1,
        ),
    ),
    "Consensus / TALL masks",
    "Wang et al., Localizing task information for improved model merging and compression "
    "(ICML 2024): TALL masks and the consensus mask",
    "Consensus",
    linear_in_lambda=True,
    check_more=_at_most_n_tasks,
)
