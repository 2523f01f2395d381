"""The xi grid as units of an executor (Ray, or this process with a journal for --resume).

Two grids run one after the other: first one unit per coefficient ``a`` evaluates the
single-task models theta_pre + a tau_1 and theta_pre + a tau_2 (their outputs are small and go
back to the driver); then one unit per row alpha1 evaluates the combined models of that row
against them. Each unit makes the same model calls on the same batches as the threaded path of
:func:`taskarith_core.analyses.xi.xi_from_runner`, so the grid is the same number for number.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from ..executor import Executor, Journal, run_grid
from ..progress import Progress
from ._common import TowerMixer
from .xi import _distance, _Outputs, _tower_runner, grid_row

__all__ = ["XiContext", "xi_on_executor"]


@dataclasses.dataclass
class XiContext:
    """What every unit of one xi grid shares (the weights travel once per node)."""

    source: Any
    pretrained: dict[str, torch.Tensor]
    vectors: list[dict[str, torch.Tensor]]
    tasks: list[str]
    split: str
    samples: int
    seed: int
    device: Any
    batch_size: int
    alphas: list[float]
    distance: str
    kept: list[tuple[float, float, int, torch.Tensor]] = dataclasses.field(default_factory=list)


#: Per worker: the tower, the runner and the data of the grids it served last.
_TOWERS: dict[tuple, tuple] = {}


def _runner_and_data(ctx: XiContext):
    """One tower and one copy of the images per worker and grid, built on first use."""
    from ..models.evaluation import head_for, split_tensors

    key = (id(ctx.pretrained), *(id(v) for v in ctx.vectors), ctx.split, ctx.samples, ctx.seed)
    if key not in _TOWERS:
        device = torch.device(ctx.device)
        data = []
        for task in ctx.tasks:
            images, _ = split_tensors(ctx.source, task, ctx.split, ctx.samples, ctx.seed)
            data.append((images.to(device), head_for(ctx.source, task, device)))
        mixer = TowerMixer(ctx.source.build_visual(device), ctx.pretrained, ctx.vectors)
        while len(_TOWERS) >= 2:
            _TOWERS.pop(next(iter(_TOWERS)))
        _TOWERS[key] = (ctx, _tower_runner(mixer, ctx.batch_size, device), data)
    return _TOWERS[key][1:]


def _single_unit(ctx: XiContext, a: float) -> list[tuple]:
    """The single-task models at coefficient ``a``: (a1, a2, task index, logits on the CPU)."""
    run, data = _runner_and_data(ctx)
    outputs = _Outputs(run, data)
    on_grid = 0.0 in ctx.alphas  # then (a, 0) and (0, a) are grid points: both halves now
    outputs.get(a, 0.0, (0, 1) if on_grid else (0,))
    outputs.get(0.0, a, (0, 1) if on_grid else (1,))
    return [(*key, value.cpu()) for key, value in outputs.kept.items()]


def _row_unit(ctx: XiContext, i: int) -> list[list[float]]:
    """Row ``alpha1 = alphas[i]``, against the single-task outputs in ``ctx.kept``."""
    run, data = _runner_and_data(ctx)
    device = torch.device(ctx.device)
    kept = {(a1, a2, t): v.to(device) for a1, a2, t, v in ctx.kept}
    single1 = [kept[(a, 0.0, 0)] for a in ctx.alphas]
    single2 = [kept[(0.0, a, 1)] for a in ctx.alphas]
    dist = _distance(ctx.distance)
    rows = grid_row(_Outputs(run, data, kept), ctx.alphas, i, single1, single2, dist)
    return [list(r) for r in rows]


def xi_on_executor(
    ctx: XiContext,
    executor: Executor,
    journal: Journal | None,
    progress: Progress,
) -> pd.DataFrame:
    """The grid's rows from ``executor``; rows in ``journal`` are not computed again."""
    alphas: Sequence[float] = ctx.alphas
    n = len(alphas)
    gpu = torch.device(ctx.device).type == "cuda"
    keys = [f"xi|{ctx.distance}|{a!r}" for a in alphas]
    if journal is None or not all(k in journal.done for k in keys):
        singles = run_grid(
            executor,
            _single_unit,
            ctx,
            list(alphas),
            keys=[f"single|{a!r}" for a in alphas],
            progress=lambda done, _total, msg: progress(done, 2 * n, f"single {msg}"),
            gpu=gpu,
        )
        kept = {(a1, a2, t): v for part in singles for a1, a2, t, v in part}
        ctx = dataclasses.replace(ctx, kept=[(*k, v) for k, v in kept.items()])
    rows = run_grid(
        executor,
        _row_unit,
        ctx,
        list(range(n)),
        keys=keys,
        labels=[f"alpha1={a:+.2f}" for a in alphas],
        journal=journal,
        progress=lambda done, _total, msg: progress(n + done, 2 * n, msg),
        gpu=gpu,
    )
    flat = [tuple(r) for row in rows for r in row]
    return pd.DataFrame(flat, columns=["alpha1", "alpha2", "xi", "xi_task1", "xi_task2"])
