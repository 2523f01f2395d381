"""The papers' evaluation protocols, shared by the zoo card and ``reproduce``.

Hyperparameters are chosen on the validation split and the chosen setting is reported on the test
split, whichever way the test numbers fall (Ilharco et al.; attention-only paper A; TaLoS A.1):

- addition: the value of the method's parameter (lambda on {0.05, ..., 1.0}, STA's p at the
  N - 1 values that give distinct masks for N tasks, sparsity k) with the highest mean normalised
  validation accuracy;
- negation: per target task, the value with the lowest validation target accuracy whose control
  accuracy stays >= 95% of zero-shot. TaLoS-masked vectors get the lambda range extended by
  1 / (1 - k), k their measured sparsity (TaLoS A.1): the paper's grid plus the grid scaled by it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from ..errors import InputError
from ..progress import Progress, no_progress
from ._common import resolve_tasks
from .negation import CONTROL_KEEP, negation_sweep
from .sweeps import Prepared, accuracy_sweep, evaluate_merged, method_spec, prepare_method

__all__ = ["MethodDone", "addition_protocol", "method_grid", "negation_protocol", "reference_rows"]

#: called with (method name, its rows) as soon as a method's rows are measured
MethodDone = Callable[[str, pd.DataFrame], None]


def _talos_sparsity(source: Any, tasks: Sequence[str]) -> float:
    """Mean fraction of frozen entries of the source's TaLoS masks (k in TaLoS A.1); one mask in
    memory at a time."""
    from .geometry import talos_masks

    kept = total = 0
    for task in tasks:
        for mask in talos_masks(source, [task]).values():
            kept += sum(int(v.sum()) for v in mask.values())
            total += sum(v.numel() for v in mask.values())
    return 1.0 - kept / total if total else 0.0


def method_grid(
    source: Any,
    name: str,
    tasks: Sequence[str],
    grids: Mapping[str, Sequence[float]] | None,
    negation: bool = False,
) -> list[float]:
    """The grid a method is tuned on: the caller's, else the paper's (extended for TaLoS masks);
    ``negation``: the grid searched for forgetting (finer in p for STA)."""
    if grids and name in grids:
        values = [float(v) for v in grids[name]]
        if not values:
            raise InputError(f"the grid for {name!r} is empty; give at least one value")
        return values
    spec = method_spec(name)
    grid = spec.forget_grid if negation else spec.search_grid(len(tasks))
    if spec.masks == "talos" and spec.param == "lam":
        # "extend this range by 1/(1-k)": sparse vectors have a lower norm, so larger lambdas are
        # added; the small ones stay, since a model can still peak there (the zoo's does, at 0.15)
        k = _talos_sparsity(source, tasks)
        return sorted({*grid, *(round(v / max(1.0 - k, 1e-3), 4) for v in grid)})
    return list(grid)


def reference_rows(
    source: Any,
    tasks: Sequence[str],
    split: str,
    device: Any,
    max_samples: int | None,
    keep_correct: bool = False,
) -> pd.DataFrame:
    """Zero-shot and fine-tuned (each model on its own task) rows in the protocol's columns
    (``keep_correct``: with their per-image correctness, column ``correct``)."""
    from ..models.evaluation import reference_accuracies, reference_correct

    refs = reference_accuracies(source, split=split, device=device, max_samples=max_samples)
    refs = refs[refs["task"].isin(tasks)]
    hits = reference_correct(source, split, device, max_samples) if keep_correct else None
    frames = []
    for name in ("zeroshot", "finetuned"):
        part = pd.DataFrame(
            {"method": name, "task": refs["task"], "accuracy": refs[name]}
        ).reset_index(drop=True)
        part["normalised"] = part["accuracy"] / refs["finetuned"].to_numpy()
        if hits is not None:
            part["correct"] = [hits[name][t] for t in part["task"]]
        frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    means = out.groupby("method", as_index=False, sort=False)[["accuracy", "normalised"]].mean()
    return pd.concat([out, means.assign(task="mean")], ignore_index=True)


class _Loaded:
    """The in-memory path loads theta_pre and every fine-tuned model once for all methods; the
    streaming path loads none and binds each method to the files."""

    def __init__(self, source: Any, tasks: Sequence[str], stream: bool) -> None:
        self.source, self.tasks, self.stream = source, list(tasks), stream
        self.pre = None if stream else source.load_pretrained()
        self.fts = None if stream else [source.load_finetuned(t) for t in tasks]

    @contextlib.contextmanager
    def prepare(
        self, name: str, grid: Sequence[float], samples: int, seed: int, device: Any
    ) -> Iterator[Any]:
        if self.stream:
            from ..real.streamed import streamed_method

            with streamed_method(
                self.source, name, self.tasks, values=grid, samples=samples, seed=seed,
                device=device,
            ) as prep:  # fmt: skip
                yield prep
            return
        yield prepare_method(
            self.source, name, self.tasks, samples=samples, seed=seed, device=device,
            pretrained=self.pre, finetuned=self.fts,
        )  # fmt: skip


def _select_addition(val: pd.DataFrame) -> float:
    """Highest mean normalised validation accuracy; ties go to the smaller value."""
    means = val[val["task"] == "mean"].sort_values(["normalised", "value"], ascending=[False, True])
    return float(means["value"].iloc[0])


def _tune_and_report(
    source: Any,
    prep: Prepared,
    grid: Sequence[float],
    tasks: Sequence[str],
    select_split: str,
    report_split: str,
    device: Any,
    max_samples: int | None,
    keep_correct: bool = False,
    grid_run: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Sweep on the selection split, then evaluate the chosen value on the report split.
    ``grid_run``: the executor / journal the sweep's values run on (default: here)."""
    val = accuracy_sweep(
        source,
        prep.name,
        grid,
        tasks=tasks,
        split=select_split,
        device=device,
        max_samples=max_samples,
        prepared=prep,
        **(grid_run or {}),
    )
    chosen = _select_addition(val)
    score = float(val[(val["task"] == "mean") & (val["value"] == chosen)]["normalised"].iloc[0])
    test = evaluate_merged(
        source,
        prep.merge(chosen),
        tasks,
        split=report_split,
        device=device,
        max_samples=max_samples,
        keep_correct=keep_correct,
    )
    mean = test[["accuracy", "normalised"]].mean().to_frame().T.assign(task="mean")
    test = pd.concat([test, mean], ignore_index=True)
    return test.assign(method=prep.name, param=prep.spec.param, value=chosen, selected_score=score)


def addition_protocol(
    source: Any,
    methods: Sequence[str],
    tasks: Sequence[str] | None = None,
    *,
    device: Any = "cpu",
    grids: Mapping[str, Sequence[float]] | None = None,
    select_split: str = "val",
    report_split: str = "test",
    max_samples: int | None = None,
    samples: int = 32,
    seed: int = 0,
    include_references: bool = True,
    stream: bool = False,
    progress: Progress = no_progress,
    keep_correct: bool = False,
    grid_run: Mapping[str, Any] | None = None,
    on_method: MethodDone | None = None,
) -> pd.DataFrame:
    """Task addition table: per method, the parameter chosen on ``select_split`` and the test
    accuracy / normalised accuracy per task and their mean (``task="mean"``).

    ``keep_correct``: per-task rows also hold their per-image correctness (column ``correct``),
    for intervals and paired comparisons (:mod:`taskarith_core.stats`).
    ``stream``: build each merged model from the checkpoint files one tensor at a time
    (:mod:`taskarith_core.real.streamed`, same numbers), never holding every fine-tuned model.
    ``grid_run``: ``executor`` / ``journal`` for the grid points (e.g. Ray; --resume).
    ``on_method(name, rows)`` receives each method's rows as soon as they are measured."""
    tasks = resolve_tasks(source, tasks, minimum=2)
    for name in methods:
        method_spec(name)
    frames = []
    loaded = _Loaded(source, tasks, stream)
    for index, name in enumerate(methods):
        grid = method_grid(source, name, tasks, grids)
        with loaded.prepare(name, grid, samples, seed, device) as prep:
            frames.append(
                _tune_and_report(
                    source,
                    prep,
                    grid,
                    tasks,
                    select_split,
                    report_split,
                    device,
                    max_samples,
                    keep_correct,
                    grid_run,
                )  # fmt: skip
            )
        if on_method is not None:
            on_method(name, frames[-1])
        progress(index + 1, len(methods), name)
    out = pd.concat(frames, ignore_index=True)
    if include_references:
        out = pd.concat(
            [
                reference_rows(source, tasks, report_split, device, max_samples, keep_correct),
                out,
            ],
            ignore_index=True,
        )
    columns = ["method", "param", "value", "task", "accuracy", "normalised", "selected_score"]
    columns += ["correct"] if keep_correct else []
    return out.reindex(columns=columns).assign(
        selected_on=select_split, split=report_split, source=source.name
    )


def _chosen_values(val: pd.DataFrame) -> dict[str, tuple[float, bool]]:
    """Per task: the best value under the control rule, or (fallback) the value with the highest
    control accuracy when no value keeps it; the flag says whether the rule held."""
    chosen = {}
    for task, part in val.groupby("task", sort=False):
        best = part[part["best"]]
        if not best.empty:
            chosen[task] = (float(best["value"].iloc[0]), True)
        else:
            top = part.sort_values(["control_accuracy", "value"], ascending=[False, True])
            chosen[task] = (float(top["value"].iloc[0]), False)
    return chosen


def negation_protocol(
    source: Any,
    methods: Sequence[str],
    tasks: Sequence[str] | None = None,
    *,
    device: Any = "cpu",
    grids: Mapping[str, Sequence[float]] | None = None,
    select_split: str = "val",
    report_split: str = "test",
    keep: float = CONTROL_KEEP,
    max_samples: int | None = None,
    samples: int = 32,
    seed: int = 0,
    stream: bool = False,
    progress: Progress = no_progress,
    grid_run: Mapping[str, Any] | None = None,
    on_method: MethodDone | None = None,
) -> pd.DataFrame:
    """Task negation table: per method and target task, the value chosen on ``select_split``
    and the test target / control accuracy, with zero-shot beside them and a mean row.

    ``stream``: edited models are built from the files one tensor at a time (same numbers).
    ``on_method(name, rows)`` receives each method's rows as soon as they are measured."""
    tasks = resolve_tasks(source, tasks)
    frames = []
    for index, name in enumerate(methods):
        grid = method_grid(source, name, tasks, grids, negation=True)
        common = dict(
            tasks=tasks,
            device=device,
            max_samples=max_samples,
            samples=samples,
            seed=seed,
            keep=keep,
            stream=stream,
            **(grid_run or {}),
        )
        val = negation_sweep(source, name, grid, split=select_split, **common)
        chosen = _chosen_values(val)
        rows = []
        for task, (value, ok) in chosen.items():
            test = negation_sweep(
                source, name, [value], split=report_split, **{**common, "tasks": [task]}
            )
            rows.append(test.assign(control_rule_on_val=ok))
        frame = pd.concat(rows, ignore_index=True).drop(columns=["best"])
        numeric = ["target_accuracy", "target_zeroshot", "control_accuracy", "control_zeroshot"]
        mean = frame[numeric].mean().to_frame().T.assign(method=name, task="mean")
        frames.append(pd.concat([frame, mean], ignore_index=True))
        if on_method is not None:
            on_method(name, frames[-1])
        progress(index + 1, len(methods), name)
    out = pd.concat(frames, ignore_index=True)
    return out.assign(selected_on=select_split, split=report_split, source=source.name)
