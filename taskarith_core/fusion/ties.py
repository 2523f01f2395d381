"""TIES-Merging (Yadav et al. 2023): trim, elect sign, disjoint mean.

Trimming keeps each task vector's top-k fraction by magnitude over the *whole* vector, so the
threshold is a global statistic: :func:`ties_thresholds` computes it, and the per-tensor rule only
compares against it (the file-based engine, :mod:`.ties_stream`, finishes it during the merge).

On the CPU the rule runs in numpy over cache-sized chunks with reused scratch arrays: torch's
boolean comparisons and bool-to-float products are several times slower there, and the rule is
most of a streamed merge's time. Every element goes through the same IEEE operations in the same
order as the plain torch rule (kept for other devices), so both give bit-identical results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..select import kth_smallest_many
from ..taskvec import StateDict, is_editable
from ._per_tensor import apply_per_tensor, work_dtype
from .dare import dare_params, dare_view
from .params import Param, scaling
from .spec import MethodSpec

__all__ = [
    "CHUNK",
    "SPEC",
    "Scratch",
    "disjoint_mean_",
    "ties_merge",
    "ties_thresholds",
    "trim_",
]

#: elements per chunk: the N task slices and the scratch arrays stay in the CPU caches
CHUNK = 1 << 16


def ties_thresholds(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    k: float,
) -> list[float]:
    """Per task, the smallest |tau| kept when keeping the top fraction k of the whole vector.

    Values equal to the threshold are kept too. Two passes of an exact radix select read every
    tensor name once per pass from all checkpoints together; no whole task vector is ever held in
    memory.
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


class Scratch:
    """Reusable per-chunk scratch arrays, so the rule allocates nothing per chunk."""

    def __init__(self, dtype: np.dtype, n_tasks: int, size: int = CHUNK) -> None:
        self.dtype = np.dtype(dtype)
        self.magnitude = np.empty(size, self.dtype)
        self.total = np.empty(size, self.dtype)
        self.keep = np.empty(size, bool)
        self.inside = np.empty(size, bool)
        self.undecided = np.empty(size, bool)
        self.count = np.empty(size, np.uint8 if n_tasks < 256 else np.uint16)

    def scalars(self, values: Sequence[float]) -> list[np.generic]:
        """``values`` in the working dtype, as torch casts a Python scalar against a tensor."""
        with np.errstate(over="ignore"):
            return [self.dtype.type(value) for value in values]


def trim_(
    taus: Sequence[np.ndarray],
    lows: Sequence[np.generic],
    highs: Sequence[np.generic],
    scratch: Scratch,
) -> np.ndarray | None:
    """Zero every |tau_t| < low_t in place (tau * (|tau| >= low), signs of zeros included).

    With ``high_t > low_t`` the magnitudes in ``[low_t, high_t)`` are kept provisionally, and the
    positions where any task has one are returned (a boolean view of ``scratch``); else None.
    The bounds are scalars of the working dtype (:meth:`Scratch.scalars`).
    """
    n = len(taus[0])
    magnitude, keep = scratch.magnitude[:n], scratch.keep[:n]
    undecided = None
    for tau, low, high in zip(taus, lows, highs):
        np.abs(tau, out=magnitude)
        np.greater_equal(magnitude, low, out=keep)
        if high > low:
            inside = np.less(magnitude, high, out=scratch.inside[:n])
            inside &= keep
            if undecided is None:
                undecided = scratch.undecided[:n]
                undecided[:] = inside
            else:
                undecided |= inside
        np.multiply(tau, keep, out=tau)
    return undecided


def disjoint_mean_(
    trimmed: Sequence[np.ndarray], lam: np.generic, out: np.ndarray, scratch: Scratch
) -> np.ndarray:
    """``out`` = lambda * mean of the values whose sign agrees with the sign of their sum.

    ``trimmed`` is destroyed. The agreeing values are summed as magnitudes in task order and the
    elected sign applied at the end: negation commutes with round-to-nearest, so this equals the
    signed sum bit for bit, and zeros never count as agreeing.
    """
    n = len(out)
    elected, agree, count = scratch.total[:n], scratch.keep[:n], scratch.count[:n]
    np.copyto(elected, trimmed[0])
    for values in trimmed[1:]:
        np.add(elected, values, out=elected)
    np.sign(elected, out=elected)
    out[:] = 0
    count[:] = 0
    for values in trimmed:
        np.multiply(values, elected, out=values)  # > 0 exactly where the signs agree
        np.greater(values, 0, out=agree)
        np.add(count, agree, out=count)
        np.multiply(values, agree, out=values)
        np.add(out, values, out=out)
    np.multiply(out, elected, out=out)
    np.maximum(count, 1, out=count)  # no agreeing value: the total is 0
    np.divide(out, count, out=out)
    return np.multiply(out, lam, out=out)


def _rule_numpy(taus: list[torch.Tensor], limits: Sequence[float], lam: float) -> torch.Tensor:
    flat = [tau.detach().reshape(-1).numpy() for tau in taus]
    delta = np.empty_like(flat[0])
    scratch = Scratch(delta.dtype, len(flat), min(CHUNK, len(delta)))
    bounds, scale = scratch.scalars(limits), scratch.scalars([lam])[0]
    for start in range(0, len(delta), CHUNK):
        chunk = [values[start : start + CHUNK] for values in flat]
        trim_(chunk, bounds, bounds, scratch)
        disjoint_mean_(chunk, scale, delta[start : start + CHUNK], scratch)
    return torch.from_numpy(delta).reshape(taus[0].shape)


def _rule_torch(taus: list[torch.Tensor], limits: Sequence[float], lam: float) -> torch.Tensor:
    trimmed = [tau.mul_(tau.abs() >= limit) for tau, limit in zip(taus, limits)]
    elected = torch.sign(sum(trimmed[1:], trimmed[0].clone()))
    total = torch.zeros_like(elected)
    count = torch.zeros_like(elected)
    for values in trimmed:
        agree = values * elected > 0  # same sign as elected; zeros never agree
        total.add_(values.mul_(agree))
        count.add_(agree)
    return total.div_(count.clamp_(min=1)).mul_(lam)  # no agreeing value: total is 0


def ties_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    keep: float = 0.2,
    lam: float = 1.0,
    thresholds: Sequence[float] | None = None,
    dare_rate: float = 0.0,
    dare_seed: int = 0,
) -> StateDict:
    """theta = theta_pre + lambda * disjoint-mean of the trimmed, sign-agreeing task vectors.

    ``dare_rate`` > 0 applies DARE's drop-and-rescale to every tau_t before the trim (STA Table
    2's "TIES-Merging + DARE"); precomputed ``thresholds`` must then come from the same view.
    """
    finetuned = dare_view(pretrained, finetuned, dare_rate, dare_seed)
    limits = (
        list(thresholds) if thresholds is not None else ties_thresholds(pretrained, finetuned, keep)
    )

    def rule(_key: str, _pre: torch.Tensor, taus: list[torch.Tensor]) -> torch.Tensor:
        # taus are fresh per-tensor copies: trimmed in place
        if taus[0].device.type == "cpu" and taus[0].numel():
            return _rule_numpy(taus, limits, lam)
        return _rule_torch(taus, limits, lam)

    return apply_per_tensor(pretrained, pretrained, finetuned, rule)


def _engine(pre, fts, params, _sides):
    """The file-streaming engine (imported here: it builds on this module)."""
    from .ties_stream import TiesStream

    dared = dare_view(pre, fts, params.get("dare_rate", 0.0), params.get("dare_seed", 0))
    return TiesStream(pre, dared, k=params["keep"], lam=params["lam"])


def _thresholds(pre, fts, params):
    """The global top-k thresholds of the (possibly DARE'd) task vectors."""
    dared = dare_view(pre, fts, params.get("dare_rate", 0.0), params.get("dare_seed", 0))
    return ties_thresholds(pre, dared, params["keep"])


SPEC = MethodSpec(
    ties_merge,
    (
        Param(
            "keep",
            "float",
            0.2,
            "fraction of each task vector's entries kept (largest magnitudes)",
            symbol="k",
            low=0.0,
            high=1.0,
            low_open=True,
            step=0.05,
        ),
        scaling(1.0),
        *dare_params(),
    ),
    "TIES: top-k trim, sign election, disjoint mean",
    "Yadav et al., TIES-Merging (NeurIPS 2023): trim, elect sign, disjoint merge",
    "TIES",
    linear_in_lambda=True,
    streams="global",
    global_stats={"thresholds": _thresholds},
    streamer=_engine,
)
