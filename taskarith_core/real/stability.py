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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from .streamed import StreamedMethod, _context, _Inputs

__all__ = ["streamed_stability"]

Reader = Callable[[str], torch.Tensor]


def _sta_method(metric: str) -> str:
    from ..analyses.methods import METHODS

    name = f"sta-{metric.replace('_', '')}"
    if name not in METHODS:
        raise InputError(f"no STA method for importance {metric!r}; use lp, amp, lp_amp, fisher")
    return name


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


@contextlib.contextmanager
def streamed_stability(
    source: Any,
    tasks: Sequence[str],
    metric: str,
    sample_counts: Sequence[int],
    p: float,
    *,
    seed: int = 0,
    device: Any = "cpu",
) -> Iterator[tuple[dict[int, list[float]], Callable[[int], dict[str, torch.Tensor]]]]:
    """``(Ns -> each task's STA-mask IoU with its mask at the largest Ns, Ns -> the STA merge at
    quantile p)``, over files. IoUs are counted as
    :func:`taskarith_core.analyses.geometry.mask_iou` counts them over the whole tower (NaN for two
    empty masks); each (task, Ns) importance file is written once for both."""
    name = _sta_method(metric)
    counts = sorted(sample_counts)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="taskarith-") as tmp:
        base = _Inputs(stack, source, tasks, Path(tmp), _context(counts[-1], seed, device))
        inputs = {n: base.resampled(n) for n in counts}
        readers = {n: inputs[n].importances(metric) for n in counts}
        keys = base.importance_names(metric)
        ious = {}
        for n in counts:
            inter, union = _counts(readers[n], readers[counts[-1]], keys, p)
            ious[n] = [i / u if u > 0 else float("nan") for i, u in zip(inter, union)]
        yield ious, lambda n: StreamedMethod(name, inputs[n], [p]).merge(p)
