"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

Trimming keeps each task vector's top-k fraction by magnitude over the *whole* vector, so the
threshold is a global statistic: :func:`ties_thresholds` computes it (the streaming driver does so
in two passes over the files before merging), and the per-tensor rule only compares against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..select import kth_smallest_many
from ..taskvec import StateDict, is_editable
from ._per_tensor import apply_per_tensor, work_dtype

__all__ = ["ties_merge", "ties_thresholds"]


def ties_thresholds(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    k: float,
) -> list[float]:
    """Per task, the smallest |tau| kept when keeping the top fraction k of the whole vector.

    Values equal to the threshold are kept too. Two passes of an exact radix select read every
    tensor name once per pass from all checkpoints together (a streaming caller reads each file
    twice); no whole task vector is ever held in memory.
    """
    sizes = {key: value.numel() for key, value in pretrained.items() if is_editable(value)}
    keys = list(sizes)

    def magnitudes():
        for key in keys:
            pre = pretrained[key]
            dtype = work_dtype(pre)
            yield [(ft[key].to(dtype) - pre.to(dtype)).abs() for ft in finetuned]

    total = sum(sizes.values())
    kept = int(round(k * total))
    if kept <= 0:
        return [float("inf")] * len(finetuned)
    return kth_smallest_many(magnitudes, [total - kept + 1] * len(finetuned))


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
        # taus are fresh per-tensor copies: trim them in place, accumulate without stacking
        trimmed = [tau.mul_(tau.abs() >= limit) for tau, limit in zip(taus, limits)]
        elected = torch.sign(sum(trimmed[1:], trimmed[0].clone()))
        total = torch.zeros_like(elected)
        count = torch.zeros_like(elected)
        for values in trimmed:
            agree = values * elected > 0  # same sign as elected; zeros never agree
            total.add_(values.mul_(agree))
            count.add_(agree)
        return total.div_(count.clamp_(min=1)).mul_(lam)  # no agreeing value: total is 0

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)
