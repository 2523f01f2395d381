"""Task arithmetic (Ilharco et al. 2023) and its masked variant (how TaLoS / user masks apply)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor

__all__ = ["masked_arithmetic", "task_arithmetic", "task_arithmetic_negate"]


def _sum(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    total = tensors[0].clone()
    for tensor in tensors[1:]:
        total += tensor
    return total


def task_arithmetic(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    lam: float = 0.4,
) -> StateDict:
    """theta = theta_pre + lambda * sum_t tau_t."""
    return apply_per_tensor(
        pretrained, pretrained, finetuned, lambda _k, _p, taus: lam * _sum(taus)
    )


def masked_arithmetic(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    masks: Sequence[Mapping[str, torch.Tensor]],
    lam: float = 1.0,
) -> StateDict:
    """theta = theta_pre + lambda * sum_t M_t * tau_t, with any precomputed masks (1 = keep)."""

    def rule(key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        kept = [tau * mask[key].to(tau.device, tau.dtype) for tau, mask in zip(taus, masks)]
        return lam * _sum(kept)

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


def task_arithmetic_negate(
    base: Mapping[str, torch.Tensor],
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    *,
    lam: float = 1.0,
) -> StateDict:
    """theta = theta_base - lambda * tau_t (Ilharco et al.'s forgetting)."""
    return apply_per_tensor(base, pretrained, [finetuned], lambda _k, _p, taus: -lam * taus[0])
