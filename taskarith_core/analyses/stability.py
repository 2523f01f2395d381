"""How stable STA's masks and merges are in the number of importance samples Ns (STA Eq. 12):
per Ns, each task's mask IoU with its mask at the largest Ns, and the merged accuracy."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..errors import InputError
from ..progress import Progress, no_progress
from ._common import resolve_tasks, task_importances
from .sweeps import evaluate_merged

__all__ = ["importance_stability"]


@contextlib.contextmanager
def _stability_in_memory(source, tasks, metric, counts, p, *, seed, device):
    """(Ns -> per-task mask IoU with the largest Ns, Ns -> merged state) from models in memory."""
    from ..fusion import merge
    from ..masks import sta_fusion_masks
    from .geometry import mask_iou

    pre = source.load_pretrained()
    fts = [source.load_finetuned(t) for t in tasks]
    imps = {
        n: task_importances(
            source, tasks, metric, samples=n, seed=seed, device=device, pretrained=pre
        )
        for n in counts
    }
    reference = sta_fusion_masks(imps[counts[-1]], p)
    ious = {}
    for n in counts:
        masks = sta_fusion_masks(imps[n], p)
        ious[n] = [
            mask_iou({"a": masks[i], "b": reference[i]})
            .query("task_a == 'a' and task_b == 'b'")["iou"]
            .iloc[0]
            for i in range(len(tasks))
        ]
    yield ious, lambda n: merge("sta", pre, fts, importances=imps[n], p=p)


def importance_stability(
    source: Any,
    metric: str = "lp",
    sample_counts: Sequence[int] = (8, 16, 32, 64),
    *,
    tasks: Sequence[str] | None = None,
    p: float = 0.7,
    seed: int = 0,
    split: str = "test",
    device: Any = "cpu",
    max_samples: int | None = None,
    progress: Progress = no_progress,
    stream: bool | None = None,
) -> pd.DataFrame:
    """For each Ns: the IoU of each task's STA mask with the mask at the largest Ns, and the
    merged accuracy per task and mean (``task="mean"``).

    ``stream`` (default: for a manifest's checkpoints) reads importances and models per tensor
    from files (:mod:`taskarith_core.real.stability`; same numbers, one merged copy in memory)."""
    from ..real.streamed import should_stream

    counts = sorted({int(n) for n in sample_counts})
    if not counts or counts[0] < 1:
        raise InputError(f"sample counts {list(sample_counts)} must be whole numbers >= 1")
    tasks = resolve_tasks(source, tasks, minimum=2)
    if should_stream(source, stream):
        from ..real.stability import streamed_stability as stability
    else:
        stability = _stability_in_memory
    frames = []
    with stability(source, tasks, metric, counts, p, seed=seed, device=device) as (ious, merged):
        for index, n in enumerate(counts):
            frame = evaluate_merged(
                source, merged(n), tasks, split=split, device=device, max_samples=max_samples
            )
            frame["iou_vs_reference"] = frame["task"].map(dict(zip(tasks, ious[n])))
            frames.append(frame.assign(samples=n))
            progress(index + 1, len(counts), f"Ns={n}")
    out = pd.concat(frames, ignore_index=True)
    means = out.groupby("samples", as_index=False)[["accuracy", "normalised", "iou_vs_reference"]]
    out = pd.concat([out, means.mean().assign(task="mean")], ignore_index=True)
    return out.assign(metric=metric, p=p, reference_samples=counts[-1], split=split)
