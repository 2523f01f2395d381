"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

Trimming keeps each task vector's top-k fraction by magnitude over the *whole* vector, so the
threshold is a global statistic: :func:`ties_threshold` computes it (the streaming driver does so in
a first pass over the files), and the per-tensor rule only compares against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from ..select import kth_smallest
from ..taskvec import StateDict, is_editable
from ._per_tensor import apply_per_tensor, work_dtype

__all__ = ["ties_merge", "ties_threshold", "ties_thresholds"]


def ties_threshold(magnitudes: Callable[[], Iterable[torch.Tensor]], k: float) -> float:
    """Smallest |tau| kept when keeping the top fraction k (values equal to it are kept too).

    ``magnitudes()`` yields |tau| tensor by tensor; it is called twice (exact radix select), so a
    whole task vector is never held in memory at once.
    """
    total = sum(m.numel() for m in magnitudes())
    kept = int(round(k * total))
    if kept <= 0:
        return float("inf")
    return kth_smallest(magnitudes, total - kept + 1)


def ties_thresholds(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    k: float,
) -> list[float]:
    """One trim threshold per task over all its editable tensors."""

    def magnitudes(ft: Mapping[str, torch.Tensor]) -> Callable[[], Iterable[torch.Tensor]]:
        return lambda: (
            (ft[key].to(work_dtype(pre)) - pre.to(work_dtype(pre))).abs()
            for key, pre in pretrained.items()
            if is_editable(pre)
        )

    return [ties_threshold(magnitudes(ft), k) for ft in finetuned]


def ties_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    k: float = 0.2,
    lam: float = 1.0,
    thresholds: Sequence[float] | None = None,
) -> StateDict:
    """theta = theta_pre + lambda * disjoint-mean of the trimmed, sign-agreeing task vectors."""
    limits = (
        list(thresholds) if thresholds is not None else ties_thresholds(pretrained, finetuned, k)
    )

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        trimmed = torch.stack([tau * (tau.abs() >= limit) for tau, limit in zip(taus, limits)])
        elected = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
        count = agree.sum(0)
        total = (trimmed * agree).sum(0)
        mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
        return lam * mean

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)
