"""STA masks (Eq. 13-17 and 20) as first-class outputs, and their per-tensor selection rates.

A mask is a ``dict[str, bool Tensor]`` with the keys of the task vector it selects from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import pandas as pd
import torch

from .errors import InputError
from .keys import block_index, tensor_kind
from .quantile import check_quantile
from .select import kth_smallest

__all__ = [
    "NOISE_FLOOR",
    "Mask",
    "flatten_masks",
    "lower_rank",
    "minmax_normalise",
    "no_ranking",
    "noise_threshold",
    "selection_network",
    "selection_rates",
    "sta_fusion_masks",
    "sta_fusion_masks_for_tensor",
    "sta_negation_mask",
    "sta_negation_mask_for_tensor",
    "unflatten_masks",
]

Mask = dict[str, torch.Tensor]


#: importance at most this fraction of its tensor's largest |I| is rounding noise, not a ranking.
#: Some importances are zero in exact arithmetic: lp's gradient w.r.t. the key bias is zero
#: because adding a constant to every key leaves the softmax unchanged, yet its stored values are
#: float noise (below 2e-7 of the tensor's maximum) that would otherwise decide masks. 2^-20 is
#: about 8 float32 ulps of the maximum: far above that noise, far below any real importance.
NOISE_FLOOR = 2.0**-20


def noise_threshold(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """|I| at or below this (float32, exact: the floor is a power of two) carries no ranking."""
    return torch.maximum(low.float().abs(), high.float().abs()) * NOISE_FLOOR


def no_ranking(importance: torch.Tensor) -> torch.Tensor:
    """Entries whose importance carries no ranking: below the noise floor, or the whole tensor
    when it is constant. They normalise to zero, so they never beat another task's entry."""
    values = importance.float()
    low, high = values.min(), values.max()
    span = high - low
    if not (span > 0) or not torch.isfinite(span):
        return torch.ones_like(values, dtype=torch.bool)
    return values.abs() <= noise_threshold(low, high)


def minmax_normalise(importance: torch.Tensor) -> torch.Tensor:
    """Eq. 13: (I - min I) / (max I - min I) within one tensor.

    A constant tensor carries no ranking, so it normalises to all zeros: it never beats another
    task at an element, and its own negation quantile selects nothing from it (strict ``>``).
    Entries below the noise floor (:data:`NOISE_FLOOR`) are treated the same way: zero.
    """
    values = importance.float()
    low, high = values.min(), values.max()
    span = high - low
    if span <= 0 or not torch.isfinite(span):
        return torch.zeros_like(values)
    quiet = values.abs() <= noise_threshold(low, high)
    return ((values - low) / span).masked_fill_(quiet, 0.0)


def _stack_normalised(importances: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 13 for N tasks at once, in place on one stacked copy (values as minmax_normalise)."""
    stacked = torch.stack([imp.float() for imp in importances])
    rows = stacked.view(stacked.shape[0], -1)
    low, high = rows.amin(dim=1), rows.amax(dim=1)
    span = high - low
    constant = ~(span > 0) | ~torch.isfinite(span)
    quiet = rows.abs() <= noise_threshold(low, high).unsqueeze(1)
    rows.sub_(low.unsqueeze(1)).div_(torch.where(constant, 1.0, span).unsqueeze(1))
    rows.masked_fill_(quiet, 0.0)
    rows[constant] = 0.0
    return stacked


def lower_rank(n: int, p: float) -> int:
    """0-based index of I*_floor(L_p) among n sorted values: floor((n - 1) p) (Eq. 15)."""
    check_quantile(p)
    return min(n - 1, math.floor((n - 1) * p + 1e-9))  # 1e-9: 0.7 * 10 must give 7, not 6


#: one compiled selection step: (max rather than min?, input buffer, input buffer, output buffer)
Step = tuple[bool, int, int, int]


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators (low index, high index) of Batcher's odd-even merge sort for n inputs.

    Built for the next power of two; comparators that touch a padding position are dropped, which
    is exact because padding would be +inf at the top and such a comparator leaves both as they are.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    block = 1
    while block < size:  # merge sorted runs of length `block` into runs of 2 * block
        gap = block
        while gap >= 1:
            for start in range(gap % block, size - gap, 2 * gap):
                for offset in range(min(gap, size - start - gap)):
                    low, high = start + offset, start + offset + gap
                    if low // (2 * block) == high // (2 * block) and high < n:
                        pairs.append((low, high))
            gap //= 2
        block *= 2
    return pairs


@lru_cache(maxsize=64)
def selection_network(n: int, rank: int) -> tuple[tuple[Step, ...], int, int]:
    """Steps that leave the rank-th smallest of buffers 0..n-1 in the returned buffer.

    Inputs are never written (the mask compares them afterwards); outputs go to scratch buffers
    n, n + 1, ... Returns (steps, result buffer, number of buffers).
    """
    needed, kept = {rank}, []
    for low, high in reversed(_batcher_pairs(n)):
        use_min, use_max = low in needed, high in needed
        if use_min or use_max:
            kept.append((low, high, use_min, use_max))
            needed |= {low, high}
    kept.reverse()
    where = list(range(n))  # position -> buffer holding its current value
    free: list[int] = []
    count = n
    steps: list[Step] = []

    def scratch() -> int:
        nonlocal count
        if free:
            return free.pop()
        count += 1
        return count - 1

    for low, high, use_min, use_max in kept:
        a, b = where[low], where[high]
        outs = []
        for wanted, position, is_max in ((use_min, low, False), (use_max, high, True)):
            if wanted:
                out = scratch()
                steps.append((is_max, a, b, out))
                outs.append((position, out))
        for position, out in outs:
            where[position] = out
        for old in (a, b):
            if old >= n and old not in where:
                free.append(old)
    return tuple(steps), where[rank], count


def _order_statistic(stacked: torch.Tensor, rank: int) -> torch.Tensor:
    """The rank-th smallest value along dim 0 (the task axis) at every element.

    For the few tasks a merge has, a selection network of element-wise min / max is several times
    faster than ``torch.sort`` or ``torch.quantile`` along a short axis.
    """
    if stacked.shape[0] > 16:
        return torch.sort(stacked, dim=0).values[rank]
    steps, result, count = selection_network(stacked.shape[0], rank)
    buffers = list(stacked) + [torch.empty_like(stacked[0]) for _ in range(count - len(stacked))]
    for is_max, a, b, out in steps:
        (torch.maximum if is_max else torch.minimum)(buffers[a], buffers[b], out=buffers[out])
    return buffers[result]


def sta_fusion_masks_for_tensor(
    importances: Sequence[torch.Tensor], p: float
) -> list[torch.Tensor]:
    """Eq. 14-17 at every element: M_i = 1(I'_i > T), T the p-quantile of the N values.

    T = I*_b + (I*_(b+1) - I*_b) frac with b = floor(L_p) lies in [I*_b, I*_(b+1)), and no value
    lies strictly between two consecutive order statistics, so I'_i > T exactly when
    I'_i > I*_b. Comparing against that order statistic gives Eq. 17's mask in exact arithmetic,
    free of the rounding of the interpolated threshold.
    """
    stacked = _stack_normalised(importances)
    lower = _order_statistic(stacked, lower_rank(stacked.shape[0], p))
    return list(stacked > lower.unsqueeze(0))


def sta_fusion_masks(importances: Sequence[Mapping[str, torch.Tensor]], p: float) -> list[Mask]:
    """Crossmasking masks for N tasks, one dict per task (keys of the first importance dict)."""
    if len(importances) < 2:
        raise InputError(f"STA fusion needs at least 2 tasks, got {len(importances)}")
    masks: list[Mask] = [{} for _ in importances]
    for key in importances[0]:
        for mask, tensor_mask in zip(
            masks, sta_fusion_masks_for_tensor([imp[key] for imp in importances], p)
        ):
            mask[key] = tensor_mask
    return masks


def sta_negation_mask_for_tensor(importance: torch.Tensor, p: float) -> torch.Tensor:
    """Eq. 20's mask: elements whose normalised importance exceeds the tensor's own p-quantile.

    As for fusion, exceeding the interpolated quantile is exceeding its lower order statistic,
    found by an exact linear-time select at any tensor size.
    """
    normalised = minmax_normalise(importance)
    flat = normalised.reshape(-1)
    lower = kth_smallest(lambda: [flat], lower_rank(flat.numel(), p) + 1)
    return normalised > lower


def sta_negation_mask(importance: Mapping[str, torch.Tensor], p: float) -> Mask:
    """Per-tensor forgetting mask of one task."""
    return {key: sta_negation_mask_for_tensor(value, p) for key, value in importance.items()}


def selection_rates(
    masks_by_task: Mapping[str, Mapping[str, torch.Tensor]],
    importances: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> pd.DataFrame:
    """One row per (task, tensor): how many entries the mask keeps (STA Fig. 4, TaLoS Fig. 4).

    With the tasks' ``importances``, ``no_ranking`` counts the entries whose importance carries
    no ranking (:func:`no_ranking`): where it equals ``numel`` the mask says nothing about that
    task's tensor."""
    rows = []
    for task, mask in masks_by_task.items():
        for key, values in mask.items():
            numel = values.numel()
            selected = int(values.bool().sum().item())
            row = {
                "task": task,
                "tensor": key,
                "block": block_index(key),
                "kind": tensor_kind(key),
                "numel": numel,
                "selected": selected,
                "rate": selected / numel if numel else 0.0,
            }
            if importances is not None:
                row["no_ranking"] = int(no_ranking(importances[task][key]).sum()) if numel else 0
            rows.append(row)
    columns = ["task", "tensor", "block", "kind", "numel", "selected", "rate"]
    return pd.DataFrame(rows, columns=columns + (["no_ranking"] if importances is not None else []))


def flatten_masks(
    masks_by_task: Mapping[str, Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Several tasks' masks in one safetensors dict: key ``"<task>/<tensor>"``, uint8 values."""
    flat = {}
    for task, mask in masks_by_task.items():
        if "/" in task:
            raise InputError(f"task name {task!r} must not contain '/'; rename the file")
        for key, values in mask.items():
            flat[f"{task}/{key}"] = values.to(torch.uint8)
    return flat


def unflatten_masks(flat: Mapping[str, torch.Tensor]) -> dict[str, Mask]:
    """Inverse of :func:`flatten_masks` (values become bool)."""
    out: dict[str, Mask] = {}
    for name, values in flat.items():
        task, sep, key = name.partition("/")
        if not sep:
            raise InputError(f"mask entry {name!r} is not '<task>/<tensor>'; write it with `masks`")
        out.setdefault(task, {})[key] = values.bool()
    return out
