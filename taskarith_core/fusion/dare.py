"""DARE (Yu et al. 2024): drop each task-vector entry with probability ``rate``, rescale the rest.

DARE is a pre-step: tau_t' = m_t * tau_t / (1 - rate) with m_t ~ Bernoulli(1 - rate) (the paper's
Eq. 1-2), after which any merge runs on the tau_t'. :func:`dare_view` applies it lazily to the
fine-tuned models, so averaging, task arithmetic and TIES (and their streamed engines) take it
as one parameter. The random keep-mask of (task, tensor) depends only on (seed, task index, tensor
name), drawn on the CPU, so a streamed merge, an in-memory merge and a GPU merge give identical
results.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from ..taskvec import StateDict, is_editable
from ._per_tensor import apply_per_tensor, work_dtype
from .params import Param, scaling
from .spec import MethodSpec

__all__ = [
    "SPEC",
    "DareView",
    "dare_keep_mask",
    "dare_merge",
    "dare_params",
    "dare_tau",
    "dare_view",
]


def dare_keep_mask(shape: torch.Size, rate: float, seed: int, task: int, key: str) -> torch.Tensor:
    """Bernoulli(1 - rate) keep mask, reproducible per (seed, task, tensor name)."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{task}:{key}".encode()))
    return torch.rand(shape, generator=generator) >= rate


def dare_tau(tau: torch.Tensor, rate: float, seed: int, task: int, key: str) -> torch.Tensor:
    """keep * tau / (1 - rate): one task's tensor after DARE's drop and rescale."""
    keep = dare_keep_mask(tau.shape, rate, seed, task, key).to(tau.device)
    return tau * keep / (1.0 - rate)


class DareView(Mapping):
    """A fine-tuned model seen through DARE: theta_pre + DARE(theta_t - theta_pre), key by key.

    Values are in the working dtype (at least float32) and computed on access, so a method that
    reads tensors one name at a time (a streamed merge) never holds more than it asked for.
    """

    def __init__(
        self,
        pretrained: Mapping[str, torch.Tensor],
        finetuned: Mapping[str, torch.Tensor],
        rate: float,
        seed: int,
        task: int,
    ) -> None:
        self._pre, self._ft = pretrained, finetuned
        self._rate, self._seed, self._task = rate, seed, task

    def __getitem__(self, key: str) -> torch.Tensor:
        ft = self._ft[key]
        pre = self._pre[key]
        if not is_editable(pre):
            return ft
        dtype = work_dtype(pre)
        tau = ft.to(dtype) - pre.to(dtype)
        return pre.to(dtype) + dare_tau(tau, self._rate, self._seed, self._task, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ft)

    def __len__(self) -> int:
        return len(self._ft)


def dare_view(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    rate: float,
    seed: int,
) -> list[Mapping[str, torch.Tensor]]:
    """The fine-tuned models with DARE as a pre-step (unchanged when ``rate`` is 0)."""
    if rate == 0:
        return list(finetuned)
    return [DareView(pretrained, ft, rate, seed, index) for index, ft in enumerate(finetuned)]


def dare_params() -> tuple[Param, Param]:
    """``dare_rate`` and ``dare_seed``: DARE as an optional pre-step of another method."""
    return (
        Param(
            "dare_rate",
            "float",
            0.0,
            "DARE pre-step: probability that each task-vector entry is dropped before merging, "
            "the rest rescaled (0 = off)",
            symbol="p",
            low=0.0,
            high=1.0,
            high_open=True,
            step=0.05,
        ),
        Param("dare_seed", "int", 0, "seed of the DARE pre-step's random drop masks", low=0),
    )


def dare_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    dare_rate: float = 0.5,
    lam: float = 0.4,
    dare_seed: int = 0,
) -> StateDict:
    """theta = theta_pre + lambda * sum_t keep_t * tau_t / (1 - dare_rate)."""

    def rule(key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros_like(taus[0])
        for index, tau in enumerate(taus):
            total += dare_tau(tau, dare_rate, dare_seed, index, key)
        return lam * total

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


SPEC = MethodSpec(
    dare_merge,
    (
        Param(
            "dare_rate",
            "float",
            0.5,
            "probability that each task-vector entry is dropped (the rest are rescaled)",
            symbol="p",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        scaling(0.4),
        Param("dare_seed", "int", 0, "seed of the random drop masks", low=0),
    ),
    "DARE drop + rescale, then TA",
    "Yu et al., Language models are Super Mario (ICML 2024): drop and rescale, then add",
    "DARE",
    linear_in_lambda=True,
)
