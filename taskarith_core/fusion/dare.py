"""DARE (Yu et al. 2024): drop each task-vector entry with probability ``rate``, rescale the rest.

The random keep-mask of (task, tensor) depends only on (seed, task index, tensor name), drawn on the
CPU, so a streamed merge, an in-memory merge and a GPU merge give identical results.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._per_tensor import apply_per_tensor
from .params import Param, scaling
from .spec import MethodSpec

__all__ = ["SPEC", "dare_keep_mask", "dare_merge"]


def dare_keep_mask(shape: torch.Size, rate: float, seed: int, task: int, key: str) -> torch.Tensor:
    """Bernoulli(1 - rate) keep mask, reproducible per (seed, task, tensor name)."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{task}:{key}".encode()))
    return torch.rand(shape, generator=generator) >= rate


def dare_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    rate: float = 0.5,
    lam: float = 0.4,
    seed: int = 0,
) -> StateDict:
    """theta = theta_pre + lambda * sum_t keep_t * tau_t / (1 - rate)."""

    def rule(key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros_like(taus[0])
        for index, tau in enumerate(taus):
            keep = dare_keep_mask(tau.shape, rate, seed, index, key).to(tau.device)
            total += tau * keep / (1.0 - rate)
        return lam * total

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


SPEC = MethodSpec(
    dare_merge,
    (
        Param(
            "rate",
            "float",
            0.5,
            "probability that each task-vector entry is dropped (the rest are rescaled)",
            symbol="p",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        scaling(0.4),
        Param("seed", "int", 0, "seed of the random drop masks", low=0),
    ),
    "DARE drop + rescale, then TA",
    "Yu et al., Language models are Super Mario (ICML 2024): drop and rescale, then add",
    "DARE",
    linear_in_lambda=True,
)
