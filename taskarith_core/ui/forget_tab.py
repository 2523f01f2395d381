"""Forget tab: subtract one task (TA with lambda, STA with p) and watch it being forgotten.

Shows target and control accuracy before (theta_pre) and after, the sweep of the method's
parameter with the "control >= 95% of zero-shot" line, and test images with predicted labels.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from ..errors import InputError
from ..fusion import NEGATION_METHODS
from ..numbers import percent_text, styled
from ..runconfig import NEGATE_CHOICES, RunConfig, page_params
from ..service.results import negation_percent
from .common import (
    config_from_source,
    explorer,
    gr_progress,
    user_errors,
    write_figures,
    write_text,
)
from .merge_tab import (
    IMPORTANCE_LABELS,
    PAGE_EVAL_SAMPLES,
    source_settings,
)

__all__ = [
    "NEGATE_LABELS",
    "build_forget_tab",
    "forget_config",
    "forget_controls_from_config",
    "forget_gallery",
    "gallery_caption",
    "negation_curve",
    "run_forget",
]

#: (label, method) of every negation method the page can run, from the registry's summaries
NEGATE_LABELS = [
    (
        NEGATION_METHODS[m].summary
        if NEGATION_METHODS[m].summary.startswith(NEGATION_METHODS[m].short)
        else f"{NEGATION_METHODS[m].short}: {NEGATION_METHODS[m].summary}",
        m,
    )
    for m in NEGATE_CHOICES
]
GALLERY_SIZE = 12


def forget_config(
    source: dict | None,
    target: str | None,
    method: str,
    importance: str,
    lam: float,
    p: float,
    samples: float,
    seed: float,
    max_samples: float | None,
) -> RunConfig:
    if not target:
        raise InputError("no target task is picked; choose the task to forget")
    return config_from_source(
        source,
        action="negate",
        target=target,
        tasks=[target],
        method=method,
        importance=importance,
        params=_chosen({"lam": float(lam), "p": float(p)}, method),
        samples=int(samples),
        seed=int(seed),
        max_samples=int(max_samples) if max_samples else None,
    )


def _visible(method: str) -> list[bool]:
    """Whether the importance, lambda, p and Ns controls apply to ``method`` (only the chosen
    method's controls are shown)."""
    if method not in NEGATE_CHOICES:
        return [True] * 4
    names = {p.name for p in page_params("negate", method)}
    reads = NEGATION_METHODS[method].needs is not None
    return [reads, "lam" in names, "p" in names, reads]


def _chosen(values: dict[str, Any], method: str) -> dict[str, Any]:
    """The controls' values that the method takes (the others stay on screen, unused)."""
    if method not in NEGATE_CHOICES:
        return {}  # the config names the unknown method
    return {p.name: values[p.name] for p in page_params("negate", method) if p.name in values}


def run_forget(cfg: RunConfig, progress: Any = None) -> tuple[pd.DataFrame, str]:
    """Target / control accuracy before and after; a sentence saying whether the rule holds."""
    table = explorer(cfg).run_negation(cfg, gr_progress(progress))
    target = table.iloc[0]
    text = (
        f"**{cfg.target}**: {percent_text(target['before'])} -> "
        f"**{percent_text(target['after'])}** "
        f"with `{cfg.method}` ({cfg.settings_text()})."
    )
    if len(table) > 1:
        control = table.iloc[1]
        keeps = control["after"] >= 0.95 * control["before"]
        verdict = "keeps" if keeps else "does NOT keep"
        text += (
            f" Control {percent_text(control['before'])} -> {percent_text(control['after'])}: "
            f"{verdict} >= 95% of zero-shot."
        )
    return table, text


def negation_curve(cfg: RunConfig, progress: Any = None) -> Any:
    """The sweep of lambda (TA) or p (STA) for the target, with the 95% control line."""
    from ..analyses.figures import negation_figure
    from ..analyses.negation import negation_sweep

    service = explorer(cfg)
    method = "ta" if cfg.method == "task_arithmetic" else f"sta-{cfg.importance.replace('_', '')}"
    key = ("negation_sweep", cfg.target, method, cfg.samples, cfg.seed, cfg.split, cfg.max_samples)
    frame = service.memo(
        key,
        lambda: negation_sweep(
            service.source,
            method,
            tasks=[cfg.target],
            split=cfg.split,
            device=service.device,
            max_samples=cfg.max_samples,
            samples=cfg.samples,
            seed=cfg.seed,
            progress=gr_progress(progress),
        ),
    )
    name = "task arithmetic" if method == "ta" else method
    figure = negation_figure(frame, title=f"Forgetting {cfg.target} with {name}")
    current = cfg.param("lam") if cfg.method == "task_arithmetic" else cfg.param("p")
    figure.add_vline(
        x=current,
        line_dash="dot",
        annotation_text="current setting",
        annotation_position="bottom right",
    )
    return figure


def forget_gallery(cfg: RunConfig, count: int = GALLERY_SIZE) -> list[tuple[np.ndarray, str]]:
    """Test images of the target with the label predicted before (theta_pre) and after."""
    from ..service.predictions import predict_labels

    service = explorer(cfg)
    target = service.negation_target(cfg)
    images, labels, before = predict_labels(service, service.pretrained(), target, count)
    _, _, after = predict_labels(service, service.merged_state(cfg), target, count)
    names = service.source.classnames(target)
    out = []
    for image, label, b, a in zip(images, labels, before, after):
        out.append((image, gallery_caption(names, label, b, a)))
    return out


def gallery_caption(names: list[str], label: int, before: int, after: int) -> str:
    """'M\u2713 -> K\u2717': the label predicted before and after, each marked right or wrong
    (short enough for a gallery tile; long class names are cut)."""

    def name(index: int) -> str:
        text = str(names[index])
        return text if len(text) <= 12 else text[:11] + "\u2026"

    marks = ["\u2713" if guess == label else "\u2717" for guess in (before, after)]
    return f"{name(before)}{marks[0]} -> {name(after)}{marks[1]}"


def forget_controls_from_config(cfg: RunConfig) -> list[Any]:
    """Source settings + the Forget tab's control values of an uploaded forgetting config."""
    if cfg.action != "negate":
        raise InputError("this run config is a merge; load it in the Merge tab")
    return [
        source_settings(cfg),
        cfg.target,
        cfg.method,
        cfg.importance,
        cfg.params.get("lam", 1.0),
        cfg.params.get("p", 0.9),
        cfg.samples,
        cfg.seed,
        cfg.max_samples or 0,
    ]


def _forget_inputs(task_names: list[str]) -> tuple[list[Any], dict[str, Any]]:
    """The left column: the task, the method and its visible controls, and the buttons."""
    target = gr.Dropdown(
        task_names,
        value=task_names[0] if task_names else None,
        label="Task to forget",
        elem_id="forget-target",
    )
    method = gr.Radio(NEGATE_LABELS, value="task_arithmetic", label="Method")
    shown = _visible("task_arithmetic")
    importance = gr.Dropdown(
        IMPORTANCE_LABELS, value="lp", label="Importance (STA)", visible=shown[0]
    )
    lam = gr.Slider(
        0,
        2,
        value=0.5,
        step=0.05,
        label="lambda (TA)",
        elem_id="forget-lam",
        visible=shown[1],
    )
    p = gr.Slider(0, 1, value=0.9, step=0.01, label="Quantile p (STA)", visible=shown[2])
    samples = gr.Slider(1, 256, value=32, step=1, label="Ns", visible=shown[3])
    seed = gr.Number(0, precision=0, label="Seed")
    max_samples = gr.Number(
        PAGE_EVAL_SAMPLES, precision=0, label="Evaluation images per task (0 = all)"
    )
    run = gr.Button("Forget", variant="primary", elem_id="forget-run")
    sweep = gr.Button("Sweep lambda / p")
    upload = gr.UploadButton(
        "Load run config (JSON)", file_types=[".json"], elem_id="forget-upload"
    )
    controls = [target, method, importance, lam, p, samples, seed, max_samples]
    return controls, {"run": run, "sweep": sweep, "upload": upload}


def _forget_outputs() -> tuple[Any, ...]:
    """The right column: summary, before/after table, gallery, sweep curve and downloads."""
    summary = gr.Markdown(elem_id="forget-summary")
    table = gr.Dataframe(
        label="Before (theta_pre) and after", elem_id="forget-table", interactive=False
    )
    gallery = gr.Gallery(
        label="Target test images: prediction before -> after (\u2713 right, \u2717 wrong)",
        columns=6,
        height="fit-content",  # as tall as its rows: no empty band, no cut row
        allow_preview=False,
        object_fit="contain",
        elem_id="forget-gallery",
    )
    curve = gr.Plot(label="Sweep: target and control accuracy")
    files = gr.File(label="Downloads", file_count="multiple")
    return summary, table, gallery, curve, files


def build_forget_tab(source_state: gr.State, task_names: list[str]) -> dict[str, Any]:
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            controls, buttons = _forget_inputs(task_names)
        with gr.Column(scale=2):
            summary, table, gallery, curve, files = _forget_outputs()
    target, method, importance, lam, p, samples = controls[:6]
    run, sweep = buttons["run"], buttons["sweep"]
    method.change(
        lambda m: [gr.update(visible=v) for v in _visible(m)],
        method,
        [importance, lam, p, samples],
        show_progress="hidden",
        api_visibility="private",
    )

    @user_errors
    def on_run(source, *values, progress=gr.Progress()):  # noqa: B008
        cfg = forget_config(source, *values)
        result, text = run_forget(cfg, progress)
        files = [write_text("forget_config.json", cfg.to_json())]
        shown = styled(negation_percent(result), ["before", "after"])
        return text, shown, forget_gallery(cfg), files

    run.click(
        on_run, [source_state, *controls], [summary, table, gallery, files], api_name="forget"
    )

    @user_errors
    def on_sweep(source, *values, progress=gr.Progress()):  # noqa: B008
        figure = negation_curve(forget_config(source, *values), progress)
        return figure, write_figures({"negation_sweep.html": figure})

    sweep.click(on_sweep, [source_state, *controls], [curve, files], api_name="forget_sweep")
    # the run-config upload is wired by the page: it may switch the source of every tab
    return {"target": target, "controls": controls, "run": run, "upload": buttons["upload"]}
