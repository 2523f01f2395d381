"""Weight averaging ("model soups", Wortsman et al. 2022): theta = (1/N) sum_t theta_t.

Written as theta_pre + (1/N) sum_t tau_t, which is the same model, so DARE can run as a pre-step
on the task vectors (STA Table 2's "Avg + DARE") and the method streams like task arithmetic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .dare import dare_params, dare_view
from .spec import MethodSpec

__all__ = ["SPEC", "weight_average"]


def weight_average(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    dare_rate: float = 0.0,
    dare_seed: int = 0,
) -> StateDict:
    """theta = theta_pre + mean_t tau_t, i.e. the mean of the fine-tuned models."""
    finetuned = dare_view(pretrained, finetuned, dare_rate, dare_seed)

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        total = taus[0].clone()
        for tau in taus[1:]:
            total += tau
        return total / len(taus)

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


SPEC = MethodSpec(
    weight_average,
    dare_params(),
    "mean of the fine-tuned models",
    "Wortsman et al., Model soups (ICML 2022): uniform average of the fine-tuned weights",
    "Avg",
)
