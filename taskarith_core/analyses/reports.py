"""One report per analysis: the tables, the figure and the one-screen text summary that
``python -m taskarith_core analyse ...`` writes. ``options`` is any object with the CLI's flags as
attributes (an ``argparse.Namespace``), so a script can build the same report without the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import InputError

__all__ = ["REPORTS", "Result"]


@dataclass
class Result:
    """What a subcommand writes: tables by file stem, one figure, and the text it prints."""

    frames: dict[str, pd.DataFrame]
    figure: Any
    summary: str
    extra_figures: dict[str, Any] = field(default_factory=dict)


def _tasks(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _table(frame: pd.DataFrame, rows: int = 20) -> str:
    with pd.option_context("display.width", 120, "display.max_columns", 12):
        text = frame.head(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}")
    more = f"\n... {len(frame) - rows} more rows in the CSV" if len(frame) > rows else ""
    return text + more


def _matrix(frame: pd.DataFrame, row: str, col: str, value: str) -> str:
    table = frame.pivot_table(index=row, columns=col, values=value, aggfunc="mean", sort=False)
    return table.to_string(float_format=lambda v: f"{v:.3f}")


def _masks_for(opts, source, tasks, device) -> dict[str, dict] | None:
    from .geometry import sta_masks, talos_masks

    if getattr(opts, "masks", "none") == "sta":
        return sta_masks(
            source, tasks, opts.metric, opts.p, samples=opts.ns, seed=opts.seed, device=device
        )
    if getattr(opts, "masks", "none") == "talos":
        return talos_masks(source, tasks)
    if getattr(opts, "masks", "none") == "fisher":
        from ._common import resolve_tasks, task_importances
        from .methods import bottom_k_masks

        tasks = resolve_tasks(source, tasks)
        scores = task_importances(
            source, tasks, "fisher", samples=opts.ns, seed=opts.seed, device=device
        )
        return dict(zip(tasks, bottom_k_masks(scores, opts.sparsity)))
    return None


def _vectors(opts, source, tasks, device) -> dict[str, dict] | None:
    """Task vectors, masked (STA crossmasking among ``tasks`` or TaLoS masks) when asked."""
    from ._common import source_task_vectors

    masks = _masks_for(opts, source, tasks, device)
    if masks is None:
        return None
    vectors = source_task_vectors(source, list(masks))
    return {
        t: {k: v * masks[t][k].to(v.dtype) if k in masks[t] else v for k, v in vec.items()}
        for t, vec in vectors.items()
    }


def _file_vectors(opts, source, tasks) -> dict[str, dict]:
    """tau = theta_file - theta_pre for two user checkpoints (e.g. from another fine-tuning run)."""
    from ..models.files import read_visual_state
    from ..taskvec import check_same_layout, task_vector

    files = [p.strip() for p in opts.finetuned.split(",") if p.strip()]
    if len(files) != 2:
        raise InputError(f"--finetuned needs two checkpoints A,B (one per task), got {len(files)}")
    if getattr(opts, "masks", "none") != "none":
        raise InputError("--finetuned and --masks cannot be combined; drop one of them")
    pre = source.load_pretrained()
    out = {}
    for task, path in zip(tasks, files):
        state = read_visual_state(path, trust_pickle=bool(getattr(opts, "trust_pickle", False)))
        check_same_layout(pre, state, other_name=path, check_dtype=False)
        out[task] = task_vector(pre, state)
    return out


def _grid(opts) -> dict[str, Any]:
    """The executor and journal the CLI opened for a grid analysis (none: run here)."""
    found = {
        "executor": getattr(opts, "executor_obj", None),
        "journal": getattr(opts, "journal", None),
    }
    return {k: v for k, v in found.items() if v is not None}


def _mask_label(opts) -> str:
    masks = getattr(opts, "masks", "none")
    if masks == "sta":
        return f", STA-{opts.metric} masks p={opts.p}"
    if masks == "fisher":
        return f", Fisher bottom-k masks sparsity={opts.sparsity}"
    return ", TaLoS masks" if masks == "talos" else ""


# ----------------------------------------------------------------------------- subcommands


def _xi(opts, source, device, progress) -> Result:
    from . import figures
    from .xi import XI_PRESETS, XiGrid, disentanglement_grid, xi_summary

    tasks = _tasks(opts.tasks) or list(source.tasks[:2])
    if len(tasks) != 2:
        raise InputError(f"--tasks needs exactly two tasks for xi, got {tasks}")
    preset = XI_PRESETS[opts.preset]
    lo, hi = opts.alpha_range if opts.alpha_range else (preset.lo, preset.hi)
    grid = XiGrid(opts.points if opts.points is not None else preset.points, lo, hi).validate()
    if getattr(opts, "finetuned", None):
        vectors = _file_vectors(opts, source, tasks)
    else:
        vectors = _vectors(opts, source, tasks, device)
    frame = disentanglement_grid(
        source,
        tasks[0],
        tasks[1],
        vectors=None if vectors is None else [vectors[t] for t in tasks],
        grid=grid,
        distance=opts.distance,
        samples=opts.samples,
        seed=opts.seed,
        split=opts.split,
        device=device,
        label=f"{source.name}{_mask_label(opts)}",
        progress=progress,
        workers=getattr(opts, "workers", 1),
        on=getattr(opts, "on", "head"),
        **_grid(opts),
    )
    summary = xi_summary(frame, opts.threshold)
    on = " on the representation (no head)" if getattr(opts, "on", "head") != "head" else ""
    text = (
        f"xi ({opts.distance}{on}) for {tasks[0]} + {tasks[1]} on "
        f"{source.name}{_mask_label(opts)}, "
        f"{grid.points}x{grid.points} grid on [{lo}, {hi}]^2, {opts.samples} samples per task\n"
        + _table(summary)
    )
    return Result({"xi": frame, "xi_summary": summary}, figures.xi_figure(frame), text)


def _kernel(opts, source, device, progress) -> Result:
    """``source`` may be a list (e.g. the zoo's paradigms) to overlay them (attention-only paper
    Fig. 3)."""
    from . import figures
    from .kernel import kernel_test

    sources = source if isinstance(source, list) else [source]
    frame = pd.concat(
        [
            kernel_test(
                src,
                _tasks(opts.tasks),
                split=opts.split,
                samples=opts.max_samples or 512,
                seed=opts.seed,
                device=device,
                progress=progress,
            )
            for src in sources
        ],
        ignore_index=True,
    )
    names = ", ".join(src.name for src in sources)
    text = f"kernel-behaviour test on {names} (accuracy; gap = non-linear - linearised)\n"
    means = frame.groupby("label", as_index=False, sort=False)[["nonlinear", "linearised", "gap"]]
    summary = _table(frame) + "\nmean per source:\n" + _table(means.mean())
    return Result({"kernel": frame}, figures.kernel_figure(frame), text + summary)


def _cosine(opts, source, device, progress) -> Result:
    from . import figures
    from ._common import resolve_tasks, source_task_vectors
    from .geometry import task_vector_cosine

    tasks = resolve_tasks(source, _tasks(opts.tasks), minimum=2)
    vectors = _vectors(opts, source, tasks, device) or source_task_vectors(source, tasks)
    frame = task_vector_cosine(vectors, by=opts.by)
    title = f"Cosine similarity between task vectors ({opts.by}), {source.name}{_mask_label(opts)}"
    whole = task_vector_cosine(vectors, by="whole")
    text = f"{title}\nwhole-vector cosine (per {opts.by} in the CSV / HTML):\n"
    text += _matrix(whole, "task_a", "task_b", "cosine")
    return Result({"cosine": frame}, figures.cosine_figure(frame, title), text)


def _iou(opts, source, device, progress) -> Result:
    from . import figures
    from .geometry import mask_iou

    masks = _masks_for(opts, source, _tasks(opts.tasks), device)
    frame = mask_iou(masks, by=opts.by)
    title = f"Mask IoU between tasks ({opts.by}), {source.name}{_mask_label(opts)}"
    text = f"{title}\n" + _matrix(mask_iou(masks), "task_a", "task_b", "iou")
    return Result({"iou": frame}, figures.iou_figure(frame, title), text)


def _rates(opts, source, device, progress) -> Result:
    from . import figures
    from .geometry import rates_table

    frame = rates_table(_masks_for(opts, source, _tasks(opts.tasks), device), level=opts.level)
    title = f"Fraction of entries selected per layer, {source.name}{_mask_label(opts)}"
    overall = frame.groupby(["task", "kind"], as_index=False)[["numel", "selected"]].sum()
    overall["rate"] = overall["selected"] / overall["numel"]
    text = f"{title}\n" + _matrix(overall, "task", "kind", "rate")
    return Result({"rates": frame}, figures.rates_figure(frame, title), text)


def _localisation(opts, source, device, progress) -> Result:
    from . import figures
    from ._common import resolve_tasks
    from .geometry import localisation_matrix

    tasks = resolve_tasks(source, _tasks(opts.tasks))
    vectors = _vectors(opts, source, tasks, device) if opts.masks != "none" else None
    frame = localisation_matrix(
        source,
        tasks,
        vectors=vectors,
        coefficient=opts.coefficient,
        split=opts.split,
        max_samples=opts.max_samples,
        device=device,
        label=f"{source.name}{_mask_label(opts)}",
        progress=progress,
    )
    column = {"finetuned": "ratio_finetuned", "zeroshot": "ratio_zeroshot"}.get(
        opts.normalise, "accuracy"
    )
    text = (
        f"function localisation on {source.name}{_mask_label(opts)}, coefficient "
        f"{opts.coefficient} ({column}; rows: edited with, columns: evaluated on)\n"
        + _matrix(frame, "edited_with", "evaluated_on", column)
    )
    return Result({"localisation": frame}, figures.localisation_figure(frame, opts.normalise), text)


def _sweep(opts, source, device, progress) -> Result:
    from . import figures
    from .sweeps import accuracy_sweep

    frame = accuracy_sweep(
        source,
        opts.method,
        opts.values,
        param=opts.param,
        tasks=_tasks(opts.tasks),
        split=opts.split,
        device=device,
        max_samples=opts.max_samples,
        samples=opts.ns,
        seed=opts.seed,
        progress=progress,
        **_grid(opts),
    )
    mean = frame[frame["task"] == "mean"]
    title = f"{opts.method} on {source.name}: accuracy against {frame['param'].iloc[0]}"
    text = f"{title} ({opts.split} split)\n" + _table(mean.drop(columns=["task"]))
    return Result({"sweep": frame}, figures.sweep_figure(frame, opts.show, title), text)


def _negation_sweep(opts, source, device, progress) -> Result:
    from . import figures
    from .negation import negation_sweep

    frame = negation_sweep(
        source,
        opts.method,
        opts.values,
        tasks=_tasks(opts.tasks),
        split=opts.split,
        device=device,
        max_samples=opts.max_samples,
        samples=opts.ns,
        seed=opts.seed,
        progress=progress,
        **_grid(opts),
    )
    best = frame[frame["best"]]
    title = f"Task negation with {opts.method} on {source.name}"
    text = (
        f"{title}: best value per task with control >= 95% of zero-shot ({opts.split} split)\n"
        + (
            _table(
                best[
                    [
                        "task",
                        "value",
                        "target_accuracy",
                        "target_zeroshot",
                        "control_accuracy",
                        "control_zeroshot",
                    ]
                ]
            )
            if not best.empty
            else "no value keeps the control accuracy for any task"
        )
    )
    return Result({"negation_sweep": frame}, figures.negation_figure(frame, title), text)


def _scaling(opts, source, device, progress) -> Result:
    from . import figures
    from .sweeps import task_count_scaling

    methods = opts.methods
    if isinstance(methods, str):  # a script's options: parse as the CLI does
        from ..cli.analyse_flags import methods_from_text

        methods = methods_from_text(methods)
    frame = task_count_scaling(
        source,
        methods,
        tasks=_tasks(opts.tasks),
        counts=opts.counts,
        subsets=opts.subsets,
        seed=opts.seed,
        split=opts.split,
        device=device,
        max_samples=opts.max_samples,
        samples=opts.ns,
        progress=progress,
        **_grid(opts),
    )
    means = frame.groupby(["method", "n_tasks"], as_index=False)["mean_normalised"].mean()
    text = f"merging N tasks on {source.name} (mean normalised accuracy)\n" + _table(means)
    return Result({"scaling": frame}, figures.scaling_figure(frame), text)


def _stability(opts, source, device, progress) -> Result:
    from . import figures
    from .geometry import ns_mask_iou
    from .stability import importance_stability

    common = dict(tasks=_tasks(opts.tasks), p=opts.p, seed=opts.seed, device=device)
    frame = importance_stability(
        source,
        opts.metric,
        opts.ns_values,
        split=opts.split,
        max_samples=opts.max_samples,
        progress=progress,
        **_grid(opts),
        **common,
    )
    pairs = ns_mask_iou(source, opts.metric, opts.ns_values, **common)
    mean = frame[frame["task"] == "mean"][["samples", "iou_vs_reference", "accuracy", "normalised"]]
    text = f"stability of {opts.metric} against Ns on {source.name} (STA p={opts.p})\n"
    text += _table(mean) + "\nmask IoU between Ns values (mean over tasks):\n"
    text += _matrix(pairs[pairs["task"] == "mean"], "samples_a", "samples_b", "iou")
    heat = pairs[pairs["task"] == "mean"].rename(
        columns={"samples_a": "task_a", "samples_b": "task_b"}
    )
    iou_fig = figures.iou_figure(
        heat.assign(group="mean over tasks"),
        f"STA mask IoU between sample counts Ns ({opts.metric}, p={opts.p}), {source.name}",
        axis="mask from Ns samples",
    )
    return Result(
        {"stability": frame, "stability_iou": pairs},
        figures.stability_figure(frame),
        text,
        {"stability_iou": iou_fig},
    )


REPORTS: dict[str, Callable[..., Result]] = {
    "xi": _xi,
    "kernel": _kernel,
    "cosine": _cosine,
    "iou": _iou,
    "rates": _rates,
    "localisation": _localisation,
    "sweep": _sweep,
    "negation-sweep": _negation_sweep,
    "scaling": _scaling,
    "stability": _stability,
}
