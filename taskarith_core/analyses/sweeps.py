"""Accuracy studies: one sweep for any merge method and parameter, the negation sweep with the
control >= 95% of zero-shot rule, scaling with the number of tasks, and stability of an importance
metric against its sample count Ns.

Methods are named as in the papers' tables (``ta``, ``ties``, ``sta-lp``, ``talos-mask``...);
:data:`METHODS`, derived from the registry, maps each name to a registry method, its tuned
parameter and grid, and the side inputs (importances, masks) it needs. Side inputs are built
once per sweep, not once per value.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..errors import InputError
from ..executor import LOCAL, Executor, Journal, run_grid
from ..progress import Progress, no_progress
from ._common import resolve_device, resolve_tasks, task_importances
from .methods import (
    ALIASES,
    LAMBDA_GRID,
    METHODS,
    NEGATION_P_GRID,
    P_GRID,
    SPARSITY_GRID,
    MethodSpec,
    bottom_k_masks,
    method_spec,
)

__all__ = [
    "ALIASES",
    "SPARSITY_GRID",
    "LAMBDA_GRID",
    "METHODS",
    "NEGATION_P_GRID",
    "P_GRID",
    "MethodSpec",
    "Prepared",
    "SideInputs",
    "accuracy_sweep",
    "evaluate_merged",
    "bottom_k_masks",
    "method_spec",
    "prepare_method",
    "task_count_scaling",
]


@dataclass
class Prepared:
    """A method bound to its inputs: ``merge(value)`` gives the merged state dict."""

    name: str
    spec: MethodSpec
    pretrained: dict[str, torch.Tensor]
    finetuned: list[dict[str, torch.Tensor]]
    extra: Callable[[dict[str, Any]], dict[str, Any]]

    def params(self, value: float, param: str | None = None) -> dict[str, Any]:
        params = {**self.spec.fixed, (param or self.spec.param): value}
        return self.extra(params)

    #: X of theta = theta_pre + lam X per setting of the other parameters (linear methods)
    units: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def merge(self, value: float, param: str | None = None) -> dict[str, torch.Tensor]:
        """theta for this value; a method linear in lambda builds X once per setting of its
        other parameters and returns theta_pre + X * lam, the arithmetic of the streamed sweep
        (:class:`taskarith_core.real.streamed.StreamedMethod`), so both give the same bits."""
        from ..fusion import MERGE_METHODS, merge

        given = {**self.spec.fixed, (param or self.spec.param): value}
        linear = MERGE_METHODS[self.spec.registry].linear_in_lambda and self.spec.masks != "fisher"
        if not linear or "lam" not in given:
            return merge(self.spec.registry, self.pretrained, self.finetuned, **self.extra(given))
        lam = float(given.pop("lam"))
        setting = json.dumps(given, sort_keys=True)
        if setting not in self.units:
            self.units[setting] = self._unit(given)
        unit = self.units[setting]
        return {k: pre + unit[k] * lam if k in unit else pre for k, pre in self.pretrained.items()}

    def _unit(self, given: dict[str, Any]) -> dict[str, torch.Tensor]:
        """X: the method at lam = 1 on the task vectors with a zero theta_pre (tau - 0 == tau
        exactly, so the method sees the same task vectors)."""
        from ..fusion import merge

        pre = self.pretrained
        floats = [k for k, v in pre.items() if v.is_floating_point()]
        zero = {k: torch.zeros_like(pre[k]) for k in floats}
        taus = [{k: ft[k].to(pre[k].dtype) - pre[k] for k in floats} for ft in self.finetuned]
        return merge(self.spec.registry, zero, taus, **self.extra({**given, "lam": 1.0}))


@dataclass
class SideInputs:
    """What every merge of a method shares besides the models: importances (STA), the source's
    masks (TaLoS) or Fisher scores to mask at each k. Plain data, so it can travel to workers."""

    kind: str = "none"  #: "none", "importances", "masks", "fisher" or "adaptation"
    tensors: list[dict[str, torch.Tensor]] = field(default_factory=list)
    #: unlabeled images and a model forward (AdaMerging); holds a callable, so it stays local
    adaptation: Any = None

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "importances":
            return {**params, "importances": self.tensors}
        if self.kind == "masks":
            return {**params, "masks": self.tensors}
        if self.kind == "fisher":
            rest = {k: v for k, v in params.items() if k != "sparsity"}
            return {**rest, "masks": bottom_k_masks(self.tensors, float(params["sparsity"]))}
        if self.kind == "adaptation":
            return {**params, "adaptation": self.adaptation}
        return params


def _side_inputs(source, tasks, spec, pre, samples, seed, device) -> SideInputs:
    if spec.metric is not None or spec.masks == "fisher":
        metric = spec.metric or "fisher"
        imps = task_importances(
            source, tasks, metric, samples=samples, seed=seed, device=device, pretrained=pre
        )
        return SideInputs("importances" if spec.metric is not None else "fisher", imps)
    if spec.masks == "talos":
        from .geometry import talos_masks

        found = talos_masks(source, tasks)
        return SideInputs("masks", [found[t] for t in tasks])
    from ..fusion import MERGE_METHODS

    if MERGE_METHODS[spec.registry].needs == "adaptation":
        from ..models.adaptation import adaptation_for

        return SideInputs("adaptation", adaptation=adaptation_for(source, tasks, device=device))
    return SideInputs()


def prepare_method(
    source: Any,
    name: str,
    tasks: Sequence[str],
    *,
    samples: int = 32,
    seed: int = 0,
    device: Any = "cpu",
    pretrained: dict[str, torch.Tensor] | None = None,
    finetuned: list[dict[str, torch.Tensor]] | None = None,
) -> Prepared:
    """Load theta_pre and the fine-tuned models once and build the method's side inputs."""
    spec = method_spec(name)
    pre = pretrained if pretrained is not None else source.load_pretrained()
    fts = finetuned if finetuned is not None else [source.load_finetuned(t) for t in tasks]
    extra = _side_inputs(source, tasks, spec, pre, samples, seed, device)
    return Prepared(name, spec, pre, fts, extra)


def evaluate_merged(
    source: Any,
    state: Mapping[str, torch.Tensor],
    tasks: Sequence[str],
    *,
    split: str = "test",
    device: Any = "cpu",
    max_samples: int | None = None,
    keep_correct: bool = False,
) -> pd.DataFrame:
    """Accuracy and normalised accuracy (acc / fine-tuned acc) of one edited model per task
    (``keep_correct``: and its per-image correctness, column ``correct``)."""
    from ..models.evaluation import add_normalised, evaluate_states, reference_accuracies

    frame = evaluate_states(
        source,
        {"merged": dict(state)},
        tasks=list(tasks),
        split=split,
        device=device,
        max_samples=max_samples,
        keep_correct=keep_correct,
    )
    refs = reference_accuracies(source, split=split, device=device, max_samples=max_samples)
    columns = ["task", "accuracy", "normalised"] + (["correct"] if keep_correct else [])
    return add_normalised(frame, refs)[columns]


def _with_mean(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Append one ``task="mean"`` row per group of ``keys`` (mean over the tasks)."""
    means = frame.groupby(list(keys), sort=False, as_index=False)[["accuracy", "normalised"]].mean()
    return pd.concat([frame, means.assign(task="mean")], ignore_index=True)


@dataclass
class _SweepContext:
    """What every point of one sweep shares (sent once per node by the Ray executor)."""

    source: Any
    prepared: Prepared
    tasks: list[str]
    param: str
    split: str
    device: Any
    max_samples: int | None


def _sweep_point(ctx: _SweepContext, value: float) -> list[dict[str, Any]]:
    """One grid point: merge at ``value``, evaluate on every task (rows as plain records)."""
    state = ctx.prepared.merge(float(value), ctx.param)
    frame = evaluate_merged(
        ctx.source,
        state,
        ctx.tasks,
        split=ctx.split,
        device=ctx.device,
        max_samples=ctx.max_samples,
    )
    return frame.to_dict("records")


def accuracy_sweep(
    source: Any,
    method: str,
    values: Sequence[float] | None = None,
    *,
    param: str | None = None,
    tasks: Sequence[str] | None = None,
    split: str = "test",
    device: Any = "cpu",
    max_samples: int | None = None,
    samples: int = 32,
    seed: int = 0,
    prepared: Prepared | None = None,
    progress: Progress = no_progress,
    executor: Executor = LOCAL,
    journal: Journal | None = None,
) -> pd.DataFrame:
    """Absolute and normalised accuracy per task (and their mean, ``task="mean"``) of ``method``
    merged at each value of ``param`` (default: the method's tuned parameter and grid).

    Each value is one unit of ``executor`` (e.g. a Ray task); finished values go to ``journal``
    and values already there are not merged again."""
    spec = method_spec(method)
    param = param or spec.param
    tasks = resolve_tasks(source, tasks, minimum=2)
    values = [float(v) for v in (spec.search_grid(len(tasks), param) if values is None else values)]
    if not values:
        raise InputError("the sweep has no values; give at least one value")
    prep = prepared or prepare_method(
        source, method, tasks, samples=samples, seed=seed, device=device
    )
    ctx = _SweepContext(source, prep, list(tasks), param, split, device, max_samples)
    results = run_grid(
        executor,
        _sweep_point,
        ctx,
        values,
        keys=[f"sweep|{method}|{param}|{split}|{v!r}" for v in values],
        labels=[f"{param}={v}" for v in values],
        journal=journal,
        progress=progress,
        gpu=resolve_device(device).type == "cuda",
    )
    frames = [
        pd.DataFrame(rows).assign(method=method, param=param, value=value)
        for value, rows in zip(values, results)
    ]
    out = _with_mean(pd.concat(frames, ignore_index=True), ["method", "param", "value"])
    return out.assign(split=split)[
        ["method", "param", "value", "task", "accuracy", "normalised", "split"]
    ]


def _subsets(tasks: Sequence[str], size: int, limit: int, rng: random.Random) -> list[tuple]:
    combos = list(itertools.combinations(tasks, size))
    return combos if len(combos) <= limit else rng.sample(combos, limit)


@contextlib.contextmanager
def _subset_merger(source, tasks, samples: int, seed: int, device: Any):
    """``(method, subset, value) -> merged state`` streamed from the checkpoint files (one merged
    copy at a time; each task's importance file written once for all subsets)."""
    from ..real.streamed import streamed_subsets

    with streamed_subsets(source, tasks, samples=samples, seed=seed, device=device) as open_:

        def from_files(name: str, subset: Sequence[str], value: float) -> dict:
            with open_(name, subset, values=[value]) as prep:
                return prep.merge(value)

        yield from_files


def task_count_scaling(
    source: Any,
    methods: Mapping[str, float],
    *,
    tasks: Sequence[str] | None = None,
    counts: Sequence[int] | None = None,
    subsets: int = 5,
    seed: int = 0,
    split: str = "test",
    device: Any = "cpu",
    max_samples: int | None = None,
    samples: int = 32,
    progress: Progress = no_progress,
    stream: bool | None = None,
    executor: Executor = LOCAL,
    journal: Journal | None = None,
) -> pd.DataFrame:
    """Mean normalised accuracy of each method (name -> value of its tuned parameter) merging
    N = 2 .. all tasks, over every subset of size N or a seeded sample of ``subsets`` of them.

    ``stream`` (default: for a manifest's checkpoints) builds each merge from the files one tensor
    at a time instead of holding every fine-tuned model (same numbers); on another ``executor``
    (Ray) the models are held in memory and each (subset, method) is one of its units."""
    tasks = resolve_tasks(source, tasks, minimum=2)
    counts = list(counts or range(2, len(tasks) + 1))
    bad = [n for n in counts if not 2 <= n <= len(tasks)]
    if bad or subsets < 1:
        raise InputError(f"task counts {bad} must lie in [2, {len(tasks)}] and subsets >= 1")
    rng = random.Random(seed)
    plan = [(n, s) for n in counts for s in _subsets(tasks, n, subsets, rng)]
    from ..real.streamed import should_stream

    stream = should_stream(source, stream) and executor is LOCAL
    if not stream:  # one unit per (subset, method): here, or on Ray with --executor
        from .scaling_units import ScalingContext, scaling_rows

        pre, fts = source.load_pretrained(), {t: source.load_finetuned(t) for t in tasks}
        ctx = ScalingContext(source, pre, fts, split, device, max_samples, samples, seed)
        rows = scaling_rows(ctx, plan, methods, executor, journal, progress)
        columns = ["method", "value", "n_tasks", "tasks", "mean_accuracy", "mean_normalised"]
        return pd.DataFrame(rows, columns=columns).assign(split=split)
    rows = []
    with _subset_merger(source, tasks, samples, seed, device) as merged:
        for index, (n, subset) in enumerate(plan):
            for name, value in methods.items():
                state = merged(name, subset, float(value))
                frame = evaluate_merged(
                    source, state, subset, split=split, device=device, max_samples=max_samples
                )
                means = frame[["accuracy", "normalised"]].mean()
                rows.append((name, value, n, ",".join(subset), *means))
            progress(index + 1, len(plan), f"N={n}")
    columns = ["method", "value", "n_tasks", "tasks", "mean_accuracy", "mean_normalised"]
    return pd.DataFrame(rows, columns=columns).assign(split=split)
