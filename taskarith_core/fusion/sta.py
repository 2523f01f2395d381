"""Selective Task Arithmetic (STA, arXiv 2411.16139): importance-masked fusion and forgetting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..masks import sta_fusion_masks_for_tensor, sta_negation_mask_for_tensor
from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .params import Param
from .spec import MethodSpec
from .sta_stream import StaStream

__all__ = ["NEGATION_SPEC", "SPEC", "sta_merge", "sta_negate"]


def sta_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    importances: Sequence[Mapping[str, torch.Tensor]],
    p: float = 0.7,
) -> StateDict:
    """Eq. 13-19: theta_fused = theta_pre + sum_t M_t * tau_t, with no scaling coefficient."""

    def rule(key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        masks = sta_fusion_masks_for_tensor([imp[key].to(taus[0].device) for imp in importances], p)
        total = taus[0].mul_(masks[0])  # the taus are fresh per-tensor copies: reuse them
        for tau, mask in zip(taus[1:], masks[1:]):
            total.add_(tau.mul_(mask))
        return total

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


def sta_negate(
    base: Mapping[str, torch.Tensor],
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    *,
    importance: Mapping[str, torch.Tensor],
    p: float = 0.9,
) -> StateDict:
    """Eq. 20: theta_neg = theta_base - M * tau_t, M from the task's own per-tensor p-quantile."""

    def rule(key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        mask = sta_negation_mask_for_tensor(importance[key].to(taus[0].device), p)
        return -(taus[0] * mask)

    return apply_per_tensor(base, pretrained, [finetuned], rule)


def _quantile(default: float, what: str) -> Param:
    return Param("p", "float", default, what, symbol="p", low=0.0, high=1.0, step=0.05)


SPEC = MethodSpec(
    sta_merge,
    (_quantile(0.7, "cross-task importance quantile (Eq. 15-16): lower keeps more"),),
    "STA crossmasking, no coefficient (Eq. 13-19)",
    "Selective Task Arithmetic (arXiv 2411.16139), Eq. 13-19",
    "STA",
    needs="importances",
    streams="tensor",
    streamer=lambda pre, fts, params, imps: StaStream(pre, fts, imps, p=params["p"]),
)
NEGATION_SPEC = MethodSpec(
    sta_negate,
    (_quantile(0.9, "per-tensor importance quantile (Eq. 20): entries above it are removed"),),
    "STA forgetting, per-tensor quantile (Eq. 20)",
    "Selective Task Arithmetic (arXiv 2411.16139), Eq. 20",
    "STA",
    needs="importance",
    streams="tensor",
)
