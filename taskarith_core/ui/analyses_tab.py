"""Analyses tab: cosine similarity, localisation, kernel test, sweeps, scaling, Ns stability.

One picker, one Run button: each choice is one ``taskarith_core.analyses`` function and its figure
function (no second versions here); results are cached per source and settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from ..analyses.methods import METHODS
from ..errors import InputError
from ..numbers import percent_frame, styled
from .common import (
    config_from_source,
    explorer,
    gr_progress,
    user_errors,
    write_figures,
    write_text,
)

__all__ = [
    "ANALYSES",
    "ANALYSIS_CONTROLS",
    "SWEEP_METHODS",
    "build_analyses_tab",
    "run_analysis",
    "shown_controls",
]

ANALYSES = [
    ("Cosine similarity of task vectors", "cosine"),
    ("Function localisation (tau_i evaluated on task j)", "localisation"),
    ("Kernel test (post-hoc linearised vs non-linear)", "kernel"),
    ("Accuracy sweep of one method", "sweep"),
    ("Scaling with the number of tasks", "scaling"),
    ("Importance stability against Ns", "stability"),
]
#: every method the sweeps know (derived from the registry of merge methods)
SWEEP_METHODS = list(METHODS)
_SCALING = {"ta": 0.3, "sta-lp": 0.8, "sta-random": 0.8}


def run_analysis(
    source: dict | None,
    analysis: str,
    tasks: list[str],
    by: str,
    method: str,
    max_samples: float | None,
    samples: float,
    progress: Any = None,
) -> tuple[Any, pd.DataFrame]:
    """(figure, table) of one analysis on the chosen tasks of the user's source."""
    if analysis not in dict((v, k) for k, v in ANALYSES):
        raise InputError(f"unknown analysis {analysis!r}; pick one from the list")
    if not tasks or len(tasks) < 2:
        raise InputError("analyses compare tasks: tick at least two tasks")
    cfg = config_from_source(source, tasks=list(tasks), samples=int(samples))
    service = explorer(cfg)
    chosen = service.resolve_tasks(tasks)
    limit = int(max_samples) if max_samples else None
    key = ("analysis", analysis, tuple(chosen), by, method, limit, int(samples))
    compute = _RUNNERS[analysis]
    frame = service.memo(
        key,
        lambda: compute(service, chosen, by, method, limit, int(samples), gr_progress(progress)),
    )
    return _FIGURES[analysis](frame, by, method), frame


def _cosine(service, tasks, by, _method, _limit, _samples, _progress):
    from ..analyses._common import source_task_vectors
    from ..analyses.geometry import task_vector_cosine

    vectors = source_task_vectors(service.source, tasks, service.pretrained())
    return task_vector_cosine(vectors, by=by)


def _localisation(service, tasks, _by, _method, limit, _samples, progress):
    from ..analyses.geometry import localisation_matrix

    return localisation_matrix(
        service.source, tasks, max_samples=limit, device=service.device, progress=progress
    )


def _kernel(service, tasks, _by, _method, limit, _samples, progress):
    from ..analyses.kernel import kernel_test

    return kernel_test(
        service.source, tasks, samples=limit or 512, device=service.device, progress=progress
    )


def _sweep(service, tasks, _by, method, limit, samples, progress):
    from ..analyses.sweeps import accuracy_sweep
    from ..executor import page_executor

    return accuracy_sweep(
        service.source,
        method,
        tasks=tasks,
        max_samples=limit,
        samples=samples,
        device=service.device,
        progress=progress,
        executor=page_executor(),  # a Ray cluster when the page was started with --ray
    )


def _scaling(service, tasks, _by, _method, limit, samples, progress):
    from ..analyses.sweeps import task_count_scaling

    return task_count_scaling(
        service.source,
        _SCALING,
        tasks=tasks,
        subsets=3,
        max_samples=limit,
        samples=samples,
        device=service.device,
        progress=progress,
    )


def _stability(service, tasks, _by, _method, limit, _samples, progress):
    from ..analyses.stability import importance_stability

    return importance_stability(
        service.source,
        "lp",
        tasks=tasks,
        max_samples=limit,
        device=service.device,
        progress=progress,
    )


_RUNNERS: dict[str, Callable[..., pd.DataFrame]] = {
    "cosine": _cosine,
    "localisation": _localisation,
    "kernel": _kernel,
    "sweep": _sweep,
    "scaling": _scaling,
    "stability": _stability,
}


def _figure(name: str) -> Callable[[pd.DataFrame, str, str], Any]:
    def draw(frame: pd.DataFrame, _by: str, _method: str) -> Any:
        from ..analyses import figures

        return getattr(figures, name)(frame)

    return draw


_FIGURES = {
    "cosine": _figure("cosine_figure"),
    "localisation": _figure("localisation_figure"),
    "kernel": _figure("kernel_figure"),
    "sweep": _figure("sweep_figure"),
    "scaling": _figure("scaling_figure"),
    "stability": _figure("stability_figure"),
}


#: the controls each analysis reads (the others are hidden while it is picked)
ANALYSIS_CONTROLS = {
    "cosine": ("by",),
    "localisation": ("max_samples",),
    "kernel": ("max_samples",),
    "sweep": ("method", "max_samples", "samples"),
    "scaling": ("max_samples", "samples"),
    "stability": ("max_samples",),
}
OPTIONAL_CONTROLS = ("by", "method", "max_samples", "samples")


def shown_controls(analysis: str) -> list[bool]:
    """Which of OPTIONAL_CONTROLS the picked analysis reads, in that order."""
    used = ANALYSIS_CONTROLS.get(analysis, OPTIONAL_CONTROLS)
    return [name in used for name in OPTIONAL_CONTROLS]


def build_analyses_tab(source_state: gr.State, task_names: list[str]) -> dict[str, Any]:
    visible = dict(zip(OPTIONAL_CONTROLS, shown_controls("cosine")))
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            analysis = gr.Radio(ANALYSES, value="cosine", label="Analysis")
            tasks = gr.CheckboxGroup(task_names, value=task_names, label="Tasks")
            by = gr.Radio(
                ["whole", "block", "kind"],
                value="whole",
                label="Pool tensors by",
                visible=visible["by"],
                elem_id="analyses-by",
            )
            method = gr.Dropdown(
                SWEEP_METHODS,
                value="sta-lp",
                label="Method to sweep",
                visible=visible["method"],
                elem_id="analyses-method",
            )
            max_samples = gr.Number(
                256,
                precision=0,
                label="Evaluation images per task (0 = all)",
                visible=visible["max_samples"],
                elem_id="analyses-images",
            )
            samples = gr.Slider(
                1,
                256,
                value=32,
                step=1,
                label="Ns (importance samples)",
                visible=visible["samples"],
                elem_id="analyses-ns",
            )
            run = gr.Button("Run analysis", variant="primary", elem_id="analyses-run")
        with gr.Column(scale=2):
            plot = gr.Plot(label="Figure", elem_id="analyses-plot")
            table = gr.Dataframe(label="Result table", interactive=False, elem_id="analyses-table")
            files = gr.File(label="Figure (HTML) and CSV", file_count="multiple")
    analysis.change(
        lambda name: [gr.update(visible=v) for v in shown_controls(name)],
        analysis,
        [by, method, max_samples, samples],
        show_progress="hidden",
        api_visibility="private",
    )

    @user_errors
    def on_run(source, *values, progress=gr.Progress()):  # noqa: B008
        figure, frame = run_analysis(source, *values, progress=progress)
        name = values[0]
        downloads = write_figures({f"{name}.html": figure})
        downloads.append(write_text(f"{name}.csv", frame.to_csv(index=False)))
        shown, percent_columns = percent_frame(frame)
        return figure, styled(shown, percent_columns), downloads

    run.click(
        on_run,
        [source_state, analysis, tasks, by, method, max_samples, samples],
        [plot, table, files],
        api_name="analysis",
    )
    return {"multi": [tasks]}
