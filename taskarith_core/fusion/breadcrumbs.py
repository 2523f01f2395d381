"""Model Breadcrumbs (Davari & Belilovsky, ECCV 2024): sparse masks that drop both extremes.

Per tensor and per row (the last dimension; a 1-D tensor is one row), each task vector first
loses its ``int(width * outliers)`` largest-magnitude entries (gamma, the outliers), then keeps
only the ``int(width * keep)`` largest of what is left (beta), so the small entries go too. The
masked task vectors are summed and scaled: theta = theta_pre + lambda sum_t M_t tau_t. This is the
authors' published procedure (remove the top first, then keep the top), with their defaults beta
= 0.2, gamma = 0.1 and lambda = 0.4. A scalar tensor is kept whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..errors import InputError
from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .params import Param, scaling
from .spec import MethodSpec

__all__ = ["SPEC", "breadcrumbs_mask", "breadcrumbs_merge"]


def _top_mask(magnitude: torch.Tensor, count: int) -> torch.Tensor:
    """True at the ``count`` largest entries of each row."""
    mask = torch.zeros_like(magnitude, dtype=torch.bool)
    if count > 0:
        _, index = torch.topk(magnitude, count, dim=-1)
        mask.scatter_(-1, index, True)
    return mask


def breadcrumbs_mask(tau: torch.Tensor, keep: float, outliers: float) -> torch.Tensor:
    """The entries of one task's tensor that survive: not among the top ``outliers`` per row,
    and among the top ``keep`` of the rest."""
    if tau.dim() == 0:
        return torch.ones_like(tau, dtype=torch.bool)
    width = tau.shape[-1]
    magnitude = tau.abs()
    survivors = ~_top_mask(magnitude, int(width * outliers))
    remaining = magnitude * survivors
    return _top_mask(remaining, int(width * keep)) & survivors


def breadcrumbs_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    keep: float = 0.2,
    outliers: float = 0.1,
    lam: float = 0.4,
) -> StateDict:
    """theta = theta_pre + lambda * sum_t breadcrumbs_mask(tau_t) * tau_t."""

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros_like(taus[0])
        for tau in taus:
            total += tau * breadcrumbs_mask(tau, keep, outliers)
        return lam * total

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


def _fraction(name: str, default: float, help_text: str, symbol: str) -> Param:
    return Param(name, "float", default, help_text, symbol=symbol, low=0.0, high=1.0, step=0.05)


def _check_fractions(params, _n_tasks: int) -> None:
    if params["keep"] + params["outliers"] > 1.0:
        raise InputError(
            f"breadcrumbs keep={params['keep']:g} plus outliers={params['outliers']:g} exceeds 1; "
            "lower one of them"
        )


SPEC = MethodSpec(
    breadcrumbs_merge,
    (
        _fraction("keep", 0.2, "fraction of each row kept, after the outliers are removed", "β"),
        _fraction("outliers", 0.1, "fraction of each row removed as outliers (largest)", "γ"),
        scaling(0.4),
    ),
    "Breadcrumbs: drop each row's outliers and small entries, then add",
    "Davari & Belilovsky, Model Breadcrumbs (ECCV 2024): masks of the top gamma and the "
    "bottom entries per layer, as in the authors' code",
    "Breadcrumbs",
    linear_in_lambda=True,
    streams="tensor",
    check_more=_check_fractions,
)
