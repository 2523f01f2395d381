"""Importance stability (STA mask IoU and merged accuracy against Ns) on checkpoint files.

In memory, :func:`taskarith_core.analyses.stability.importance_stability` holds every task's
model and one importance per task and Ns: for eight ViT-L/14 towers and four sample counts that is
tens of GB. Here the importances are read back per tensor from the disk cache, the masks are built
one tensor name at a time (Eq. 13-17 act per tensor) and their intersections and unions are
counted, and each Ns's merge is the streamed STA merge: the same numbers, one merged copy in memory.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .streamed import _context, _Inputs, streamed_method

__all__ = ["streamed_mask_ious", "streamed_sta_merge"]

Reader = Callable[[str], torch.Tensor]


def _sta_method(metric: str) -> str:
    from ..analyses.sweeps import METHODS

    name = f"sta-{metric.replace('_', '')}"
    if name not in METHODS:
        raise InputError(f"no STA method for importance {metric!r}; use lp, amp, lp_amp, fisher")
    return name


def _importance_keys(inputs: _Inputs, reader: Reader) -> list[str]:
    """Tensor names the importances cover: a model metric's file's own names, else (metrics
    computed per tensor) every editable tensor, as :func:`compute_importance` takes them."""
    from ..taskvec import is_editable

    view = getattr(reader, "__self__", None)
    if view is not None:
        return list(view)
    return [key for key in inputs.keys if is_editable(inputs.pre[key])]


def _counts(readers: Sequence[Reader], reference: Sequence[Reader], keys, p: float):
    """Per task: (entries kept by both masks, entries kept by either), summed over ``keys``."""
    from ..masks import sta_fusion_masks_for_tensor

    inter, union = [0] * len(readers), [0] * len(readers)
    for key in keys:
        masks = sta_fusion_masks_for_tensor([read(key) for read in readers], p)
        ref = sta_fusion_masks_for_tensor([read(key) for read in reference], p)
        for i, (a, b) in enumerate(zip(masks, ref)):
            inter[i] += int((a & b).sum())
            union[i] += int((a | b).sum())
    return inter, union


def streamed_mask_ious(
    source: Any,
    tasks: Sequence[str],
    metric: str,
    sample_counts: Sequence[int],
    p: float,
    *,
    seed: int = 0,
    device: Any = "cpu",
) -> dict[int, list[float]]:
    """Per Ns: each task's STA-mask IoU with its mask at the largest Ns (NaN for two empty
    masks), as :func:`taskarith_core.analyses.geometry.mask_iou` counts it over the whole tower."""
    _sta_method(metric)
    counts = sorted(sample_counts)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="taskarith-") as tmp:
        readers = {}
        for n in counts:
            work = Path(tmp) / f"samples-{n}"
            work.mkdir()
            inputs = _Inputs(stack, source, tasks, work, _context(n, seed, device))
            readers[n] = inputs.importances(metric)
        keys = _importance_keys(inputs, readers[counts[-1]][0])
        out = {}
        for n in counts:
            inter, union = _counts(readers[n], readers[counts[-1]], keys, p)
            out[n] = [i / u if u > 0 else float("nan") for i, u in zip(inter, union)]
        return out


def streamed_sta_merge(
    source: Any, tasks: Sequence[str], metric: str, samples: int, p: float, *, seed: int = 0,
    device: Any = "cpu",
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The STA merge of ``tasks`` at quantile ``p`` with Ns = ``samples``, built per tensor."""
    with streamed_method(
        source, _sta_method(metric), tasks, values=[p], samples=samples, seed=seed, device=device
    ) as prep:
        return prep.merge(p)
