"""Task negation sweep: target and control accuracy against lambda (TA) or p (STA), with the
best setting under the rule "control accuracy >= 95% of its zero-shot accuracy" marked
(Ilharco et al.; TaLoS Section 5 and A.1; STA Eq. 20)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ..errors import InputError
from ..executor import LOCAL, Executor, Journal, run_grid
from ..progress import Progress, no_progress
from ._common import resolve_device, resolve_tasks, task_importances
from .methods import method_spec, negated_state

__all__ = ["CONTROL_KEEP", "mark_best", "negation_sweep", "negated_state"]

#: Fraction of zero-shot control accuracy a negation must keep (Ilharco et al.; TaLoS A.1).
CONTROL_KEEP = 0.95


def mark_best(frame: pd.DataFrame, keep: float = CONTROL_KEEP) -> pd.DataFrame:
    """Flag, per (method, task), the value with the lowest target accuracy among those whose
    control accuracy stays >= ``keep`` x zero-shot; ties go to the smaller edit (smaller value)."""
    frame = frame.copy()
    frame["keeps_control"] = frame["control_accuracy"] >= keep * frame["control_zeroshot"]
    frame["best"] = False
    for _key, part in frame.groupby(["method", "task"], sort=False):
        ok = part[part["keeps_control"]]
        if ok.empty:
            continue
        best = ok.sort_values(["target_accuracy", "value"], kind="stable").index[0]
        frame.loc[best, "best"] = True
    return frame


def _accuracies(source, state, tasks, split, device, max_samples) -> dict[str, float]:
    from ..models.evaluation import evaluate_states

    frame = evaluate_states(
        source,
        {"edited": state},
        tasks=list(tasks),
        split=split,
        device=device,
        max_samples=max_samples,
    )
    return dict(zip(frame["task"], frame["accuracy"]))


def _side(source, name, tasks, samples, seed, device, pre):
    spec = method_spec(name)
    if spec.negation == "sta":
        imps = task_importances(
            source, tasks, spec.metric, samples=samples, seed=seed, device=device, pretrained=pre
        )
        return dict(zip(tasks, imps)), {}
    if spec.masks == "talos":
        from .geometry import talos_masks

        return {}, talos_masks(source, tasks)
    return {}, {}


@contextlib.contextmanager
def _edits(source, method, task, pre, side, stream, ctx) -> Iterator[Callable[[float], dict]]:
    """``value -> edited state`` of one target task: from models in memory, or streamed from the
    files (:func:`taskarith_core.real.streamed.streamed_negation`) when ``stream``."""
    if stream:
        from ..real.streamed import streamed_negation

        with streamed_negation(source, method, task, **ctx) as state:
            yield state
        return
    importances, masks = side
    ft = source.load_finetuned(task)
    imp, mask = importances.get(task), masks.get(task)
    yield lambda value: negated_state(method, pre, ft, value, importance=imp, mask=mask)


def _task_rows(source, method, task, values, zero, where, edits) -> list[tuple]:
    """Target and control accuracy of ``task`` negated at each value."""
    control = source.control_task
    spec = method_spec(method)
    rows = []
    with edits as state_for:
        for value in values:
            acc = _accuracies(source, state_for(float(value)), [task, control], *where)
            rows.append(
                (
                    method,
                    spec.param,
                    float(value),
                    task,
                    acc[task],
                    zero[task],
                    acc[control],
                    zero[control],
                )
            )
    return rows


class _LastLoaded(dict):
    """``task -> fine-tuned model``, loading on demand and keeping only the last one."""

    def __init__(self, source: Any) -> None:
        super().__init__()
        self.source = source

    def __missing__(self, task: str) -> dict[str, torch.Tensor]:
        self.clear()
        self[task] = self.source.load_finetuned(task)
        return self[task]


@dataclass
class _NegationContext:
    """What every (target task, value) point shares (sent once per node by the Ray executor)."""

    source: Any
    method: str
    pretrained: dict[str, torch.Tensor]
    finetuned: Mapping[str, dict[str, torch.Tensor]]
    importances: dict[str, dict[str, torch.Tensor]]
    masks: dict[str, dict[str, torch.Tensor]]
    zero: dict[str, float]
    split: str
    device: Any
    max_samples: int | None


def _negation_point(ctx: _NegationContext, item: tuple[str, float]) -> list:
    """One grid point: negate ``task`` at ``value``, evaluate the target and the control."""
    task, value = item
    state = negated_state(
        ctx.method,
        ctx.pretrained,
        ctx.finetuned[task],
        float(value),
        importance=ctx.importances.get(task),
        mask=ctx.masks.get(task),
    )
    control = ctx.source.control_task
    acc = _accuracies(ctx.source, state, [task, control], ctx.split, ctx.device, ctx.max_samples)
    param = method_spec(ctx.method).param
    return [ctx.method, param, float(value), task, acc[task], ctx.zero[task], acc[control]]


def _rows_on_executor(ctx: _NegationContext, tasks, values, executor, journal, progress):
    items = [(task, float(value)) for task in tasks for value in values]
    results = run_grid(
        executor,
        _negation_point,
        ctx,
        items,
        keys=[f"negation|{ctx.method}|{ctx.split}|{t}|{v!r}" for t, v in items],
        labels=[f"{t} {v}" for t, v in items],
        journal=journal,
        progress=progress,
        gpu=resolve_device(ctx.device).type == "cuda",
    )
    control = ctx.source.control_task
    return [(*row, ctx.zero[control]) for row in results]


def negation_sweep(
    source: Any,
    method: str,
    values: Sequence[float] | None = None,
    *,
    tasks: Sequence[str] | None = None,
    split: str = "test",
    device: Any = "cpu",
    max_samples: int | None = None,
    samples: int = 32,
    seed: int = 0,
    keep: float = CONTROL_KEEP,
    stream: bool = False,
    progress: Progress = no_progress,
    executor: Executor = LOCAL,
    journal: Journal | None = None,
) -> pd.DataFrame:
    """One row per (target task, value): target and control accuracy, their zero-shot values,
    whether the control rule holds and which value is best for that task.

    ``stream``: build each edited model from the files one tensor at a time (same numbers, one
    model in memory instead of theta_pre + theta_t + the edit). Otherwise each (task, value) is
    one unit of ``executor`` (e.g. a Ray task), journaled in ``journal`` for --resume."""
    spec = method_spec(method)
    if spec.negation is None:
        raise InputError(
            f"method {method!r} has no negation; use ta, talos-mask or an sta-* method"
        )
    control = source.control_task
    if not control:
        raise InputError(f"model source {source.name!r} has no control set; negation needs one")
    values = list(spec.forget_grid if values is None else values)
    if not values:
        raise InputError("the negation sweep has no values; give at least one value")
    tasks = resolve_tasks(source, tasks)
    pre = source.load_pretrained()
    zero = _accuracies(source, pre, [*tasks, control], split, device, max_samples)
    if stream:
        pre, side = None, ({}, {})  # the streamed edits read theta_pre from its file
    else:
        side = _side(source, method, tasks, samples, seed, device, pre)
    if stream:
        ctx = {"samples": samples, "seed": seed, "device": device}
        rows = []
        for index, task in enumerate(tasks):
            edits = _edits(source, method, task, pre, side, stream, ctx)
            where = (split, device, max_samples)
            rows += _task_rows(source, method, task, values, zero, where, edits)
            progress(index + 1, len(tasks), task)
    else:
        # Here one fine-tuned model at a time (the points come task by task); Ray needs them all.
        fts = (
            _LastLoaded(source)
            if executor is LOCAL
            else {t: source.load_finetuned(t) for t in tasks}
        )
        point = _NegationContext(source, method, pre, fts, *side, zero, split, device, max_samples)
        rows = _rows_on_executor(point, tasks, values, executor, journal, progress)
    columns = [
        "method",
        "param",
        "value",
        "task",
        "target_accuracy",
        "target_zeroshot",
        "control_accuracy",
        "control_zeroshot",
    ]
    return mark_best(pd.DataFrame(rows, columns=columns), keep).assign(split=split)
