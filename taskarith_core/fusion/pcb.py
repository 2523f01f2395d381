"""PCB-Merging (Du et al., NeurIPS 2024): parameter competition balancing, as its authors code it.

Over the whole task vector tau_i of each task (all editable tensors flattened, d entries; N tasks):

1. clamp outliers: a_i = clamp(|tau_i|, q_i(1%), q_i(99%)), where q_i(r) is the entry at 0-based
   rank ``int(d r)`` (low) and ``int(d (1 - 1%) - 1)`` (high) of the sorted |tau_i|; the merged
   values use sign(tau_i) a_i;
2. intra-balancing (paper Eq. 2): exp(N Norm(a_i)^2) with Norm the min-max over the vector;
3. inter-balancing (Eq. 3): sum_j tanh(s_i s_j), s = sign(tau) Norm(a);
4. drop (Eq. 4): beta_i = intra * inter is clamped below at its entry of rank ``int(d (1 -
   ratio))`` and min-max normalised, so only the top ``ratio`` fraction keeps a positive weight;
5. rescale (Eq. 5): tau_m = sum_i lambda sign(tau_i) a_i beta_i / max(sum_i beta_i, 1e-12).

The authors' exponential stands in for the paper's softmax (the same up to a factor that the
min-max of step 4 removes). Every quantile above is a global statistic of one task:
:func:`pcb_stats` finds them exactly with a radix select that reads the tensors name by name, so
the merge streams in bounded memory; the per-tensor rule then only applies them. A constant
|tau_i| (no spread to normalise) gives Norm = 0 where the reference code would divide by zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..select import kth_smallest_many
from ..taskvec import StateDict, is_editable
from ._per_tensor import apply_per_tensor, work_dtype
from .params import Param, scaling
from .spec import MethodSpec

__all__ = ["OUTLIER_RATIO", "SPEC", "PcbStats", "pcb_balancing", "pcb_merge", "pcb_stats"]

#: the fraction of |tau| clamped at each end before normalising (the authors' vision code)
OUTLIER_RATIO = 0.01


@dataclass(frozen=True)
class PcbStats:
    """Per task: the clamp bounds of |tau| and the low bound and maximum of the balancing."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    beta_low: tuple[float, ...]
    beta_high: tuple[float, ...]


def _norm(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Min-max normalisation with known bounds (0 where there is no spread)."""
    if high <= low:
        return torch.zeros_like(values)
    return (values - low) / (high - low)


def pcb_balancing(
    taus: Sequence[torch.Tensor], low: Sequence[float], high: Sequence[float]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(clamped task vectors sign(tau) a, balancing intra * inter) of one tensor (steps 1-3)."""
    n = len(taus)
    clamped, signed, intra = [], [], []
    for tau, lo, hi in zip(taus, low, high):
        magnitude = tau.abs().clamp(lo, hi)
        sign = torch.sign(tau)
        clamped.append(sign * magnitude)
        normed = _norm(magnitude, lo, hi)
        signed.append(sign * normed)
        intra.append(torch.exp(n * normed**2))
    balancing = []
    for i in range(n):
        inter = torch.tanh(signed[i] * signed[0])
        for j in range(1, n):
            inter += torch.tanh(signed[i] * signed[j])
        balancing.append(intra[i] * inter)
    return clamped, balancing


def _taus(pretrained, finetuned, keys):
    for key in keys:
        pre = pretrained[key]
        dtype = work_dtype(pre)
        yield [ft[key].to(dtype) - pre.to(dtype) for ft in finetuned]


def pcb_stats(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    ratio: float,
) -> PcbStats:
    """The global quantiles of steps 1 and 4, exact, reading the tensors name by name."""
    keys = [key for key, value in pretrained.items() if is_editable(value)]
    d = sum(pretrained[key].numel() for key in keys)
    n = len(finetuned)
    lo_rank = int(d * OUTLIER_RATIO) + 1
    hi_rank = int(d * (1 - OUTLIER_RATIO) - 1) + 1
    ranks = [lo_rank] * n + [hi_rank] * n
    bounds = kth_smallest_many(
        lambda: ([tau.abs() for tau in taus] * 2 for taus in _taus(pretrained, finetuned, keys)),
        ranks,
    )
    low, high = bounds[:n], bounds[n:]

    def balancing():
        for taus in _taus(pretrained, finetuned, keys):
            yield pcb_balancing(taus, low, high)[1] * 2

    beta_rank = min(int(d * (1 - ratio)), d - 1) + 1
    betas = kth_smallest_many(balancing, [beta_rank] * n + [d] * n)
    return PcbStats(tuple(low), tuple(high), tuple(betas[:n]), tuple(betas[n:]))


def pcb_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    ratio: float = 0.05,
    lam: float = 1.2,
    stats: PcbStats | None = None,
) -> StateDict:
    """theta = theta_pre + the PCB-weighted mean of the clamped task vectors, scaled by lambda."""
    stats = stats if stats is not None else pcb_stats(pretrained, finetuned, ratio)

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        clamped, balancing = pcb_balancing(taus, stats.low, stats.high)
        total = torch.zeros_like(taus[0])
        weights = torch.zeros_like(taus[0])
        for value, beta, lo, hi in zip(clamped, balancing, stats.beta_low, stats.beta_high):
            scale = _norm(beta.clamp(lo, hi), lo, hi)
            total += lam * value * scale
            weights += scale
        return total / weights.clamp(min=1e-12)

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


SPEC = MethodSpec(
    pcb_merge,
    (
        Param(
            "ratio",
            "float",
            0.05,
            "fraction of each task's entries that keep a weight (highest balancing scores)",
            symbol="r",
            low=0.0,
            high=1.0,
            low_open=True,
            step=0.01,
        ),
        scaling(1.2),
    ),
    "PCB: intra/inter-task balancing, drop, weighted rescale",
    "Du et al., Parameter Competition Balancing for Model Merging (NeurIPS 2024), Eq. 2-5, "
    "as in the authors' vision code",
    "PCB",
    linear_in_lambda=True,
    streams="global",
    global_stats={"stats": lambda pre, fts, params: pcb_stats(pre, fts, params["ratio"])},
)
