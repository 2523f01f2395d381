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

__all__ = ["dare_keep_mask", "dare_merge"]


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
