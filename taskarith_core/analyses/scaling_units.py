"""Task-count scaling as units of an executor: one unit per (task subset, method).

Each unit merges the subset with the method at its value (side inputs of that subset, as the
in-memory path builds them) and evaluates it on the subset's tasks, returning the row of
:func:`taskarith_core.analyses.sweeps.task_count_scaling`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..executor import Executor, Journal, run_grid
from ..progress import Progress
from ._common import resolve_device

__all__ = ["ScalingContext", "scaling_rows"]


@dataclass
class ScalingContext:
    """What every (subset, method) unit shares: theta_pre and every fine-tuned model."""

    source: Any
    pretrained: dict[str, torch.Tensor]
    finetuned: dict[str, dict[str, torch.Tensor]]
    split: str
    device: Any
    max_samples: int | None
    samples: int
    seed: int


def _scaling_unit(ctx: ScalingContext, item: tuple) -> list:
    from .sweeps import evaluate_merged, prepare_method

    name, value, n, subset = item
    prep = prepare_method(
        ctx.source,
        name,
        subset,
        samples=ctx.samples,
        seed=ctx.seed,
        device=ctx.device,
        pretrained=ctx.pretrained,
        finetuned=[ctx.finetuned[t] for t in subset],
    )
    frame = evaluate_merged(
        ctx.source,
        prep.merge(float(value)),
        subset,
        split=ctx.split,
        device=ctx.device,
        max_samples=ctx.max_samples,
    )
    means = frame[["accuracy", "normalised"]].mean()
    return [name, value, n, ",".join(subset), float(means.iloc[0]), float(means.iloc[1])]


def scaling_rows(
    ctx: ScalingContext,
    plan: Sequence[tuple[int, Sequence[str]]],
    methods: Mapping[str, float],
    executor: Executor,
    journal: Journal | None,
    progress: Progress,
) -> list[tuple]:
    """The scaling table's rows in plan order, each (subset, method) a unit of ``executor``."""
    items = [(name, value, n, list(s)) for n, s in plan for name, value in methods.items()]
    rows = run_grid(
        executor,
        _scaling_unit,
        ctx,
        items,
        keys=[f"scaling|{ctx.split}|{m}|{v!r}|{','.join(s)}" for m, v, _, s in items],
        labels=[f"N={n} {m}" for m, _, n, _ in items],
        journal=journal,
        progress=progress,
        gpu=resolve_device(ctx.device).type == "cuda",
    )
    return [tuple(r) for r in rows]
