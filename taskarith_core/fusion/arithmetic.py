"""Task arithmetic (Ilharco et al. 2023) and its masked variant (how TaLoS / user masks apply)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .dare import dare_params, dare_view
from .params import scaling
from .spec import MethodSpec

__all__ = [
    "MASKED_SPEC",
    "NEGATION_SPEC",
    "SPEC",
    "masked_arithmetic",
    "task_arithmetic",
    "task_arithmetic_negate",
]


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
    dare_rate: float = 0.0,
    dare_seed: int = 0,
) -> StateDict:
    """theta = theta_pre + lambda * sum_t tau_t (Ilharco et al. 2023, Eq. 1 of the STA paper).

    ``dare_rate`` > 0 applies DARE's drop-and-rescale to every tau_t first (STA Table 2's
    "Task Arithmetic + DARE").
    """
    finetuned = dare_view(pretrained, finetuned, dare_rate, dare_seed)
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


SPEC = MethodSpec(
    task_arithmetic,
    (scaling(0.4), *dare_params()),
    "theta_pre + lambda * sum tau",
    "Ilharco et al., Editing models with task arithmetic (ICLR 2023), Eq. 1",
    "TA",
    linear_in_lambda=True,
)
MASKED_SPEC = MethodSpec(
    masked_arithmetic,
    (scaling(1.0),),
    "theta_pre + lambda * sum M_t * tau_t",
    "task arithmetic with per-task masks (how TaLoS's sparse task vectors add up)",
    "masked TA",
    needs="masks",
    linear_in_lambda=True,
)
NEGATION_SPEC = MethodSpec(
    task_arithmetic_negate,
    (scaling(1.0),),
    "theta_base - lambda * tau",
    "Ilharco et al., Editing models with task arithmetic (ICLR 2023), forgetting by negation",
    "TA",
    linear_in_lambda=True,
)
