"""How stable STA's masks and merges are in the number of importance samples Ns (STA Eq. 12):
per Ns, each task's mask IoU with its mask at the largest Ns, and the merged accuracy."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..errors import InputError
from ..executor import LOCAL, Executor, Journal, run_grid
from ..progress import Progress, no_progress
from ._common import resolve_device, resolve_tasks, task_importances
from .sweeps import evaluate_merged

__all__ = ["importance_stability"]


@contextlib.contextmanager
def _stability_in_memory(source, tasks, metric, counts, p, *, seed, device, split, max_samples):
    """(Ns -> per-task mask IoU with the largest Ns, the context of the Ns units) from models in
    memory."""
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
    yield ious, _StabilityContext(source, pre, fts, imps, p, tasks, split, device, max_samples)


@dataclass
class _StabilityContext:
    """What every Ns unit shares: the models and every Ns's importances."""

    source: Any
    pretrained: dict[str, torch.Tensor]
    finetuned: list[dict[str, torch.Tensor]]
    importances: dict[int, list[dict[str, torch.Tensor]]]
    p: float
    tasks: list[str]
    split: str
    device: Any
    max_samples: int | None


def _stability_unit(ctx: _StabilityContext, n: int) -> list[dict[str, Any]]:
    """One Ns: STA-merge with that Ns's importances and evaluate every task."""
    from ..fusion import merge

    state = merge("sta", ctx.pretrained, ctx.finetuned, importances=ctx.importances[n], p=ctx.p)
    frame = evaluate_merged(
        ctx.source,
        state,
        ctx.tasks,
        split=ctx.split,
        device=ctx.device,
        max_samples=ctx.max_samples,
    )
    return frame.to_dict("records")


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
    executor: Executor = LOCAL,
    journal: Journal | None = None,
) -> pd.DataFrame:
    """For each Ns: the IoU of each task's STA mask with the mask at the largest Ns, and the
    merged accuracy per task and mean (``task="mean"``).

    ``stream`` (default: for a manifest's checkpoints) reads importances and models per tensor
    from files (:mod:`taskarith_core.real.stability`; same numbers, one merged copy in memory).
    Otherwise each Ns is one unit of ``executor`` (e.g. Ray), journaled for --resume."""
    from ..real.streamed import should_stream

    counts = sorted({int(n) for n in sample_counts})
    if not counts or counts[0] < 1:
        raise InputError(f"sample counts {list(sample_counts)} must be whole numbers >= 1")
    tasks = resolve_tasks(source, tasks, minimum=2)
    if not should_stream(source, stream) or executor is not LOCAL:
        where = {"seed": seed, "device": device, "split": split, "max_samples": max_samples}
        with _stability_in_memory(source, tasks, metric, counts, p, **where) as (ious, ctx):
            results = run_grid(
                executor,
                _stability_unit,
                ctx,
                counts,
                keys=[f"stability|{metric}|{p!r}|{split}|{n}" for n in counts],
                labels=[f"Ns={n}" for n in counts],
                journal=journal,
                progress=progress,
                gpu=resolve_device(device).type == "cuda",
            )
        frames = []
        for n, rows in zip(counts, results):
            frame = pd.DataFrame(rows)
            frame["iou_vs_reference"] = frame["task"].map(dict(zip(tasks, ious[n])))
            frames.append(frame.assign(samples=n))
        return _stability_table(frames, metric, p, counts, split)
    from ..real.stability import streamed_stability as stability

    frames = []
    with stability(source, tasks, metric, counts, p, seed=seed, device=device) as (ious, merged):
        for index, n in enumerate(counts):
            frame = evaluate_merged(
                source, merged(n), tasks, split=split, device=device, max_samples=max_samples
            )
            frame["iou_vs_reference"] = frame["task"].map(dict(zip(tasks, ious[n])))
            frames.append(frame.assign(samples=n))
            progress(index + 1, len(counts), f"Ns={n}")
    return _stability_table(frames, metric, p, counts, split)


def _stability_table(frames, metric, p, counts, split) -> pd.DataFrame:
    out = pd.concat(frames, ignore_index=True)
    means = out.groupby("samples", as_index=False)[["accuracy", "normalised", "iou_vs_reference"]]
    out = pd.concat([out, means.mean().assign(task="mean")], ignore_index=True)
    return out.assign(metric=metric, p=p, reference_samples=counts[-1], split=split)
