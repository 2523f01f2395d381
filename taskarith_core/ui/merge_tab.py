"""Merge tab: pick tasks, a method and its controls, press Run, compare runs side by side.

The callbacks are plain functions of plain values (tests call them directly); ``build_merge_tab``
only lays out components and wires them to these functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..errors import InputError
from ..fusion import MERGE_METHODS
from ..fusion.params import Param
from ..numbers import styled
from ..runconfig import MERGE_CHOICES, RunConfig, page_params
from ..service.results import (
    HISTORY_COLUMNS,
    PERCENT_COLUMNS,
    accuracy_figure,
    history_frame,
    history_row,
    mean_markdown,
    percent_table,
    sta_kept_text,
)
from ..sta_levels import distinct_p_text
from .common import (
    DEFAULT_SOURCE,
    config_from_source,
    download_dir,
    explorer,
    gr_progress,
    user_errors,
    write_figures,
    write_text,
)
from .evidence import (
    compare_runs,
    history_extras,
    interval_markdown,
    mark_references,
    zoo_claims_markdown,
)
from .param_controls import param_control
from .upload import read_uploaded_config

__all__ = [
    "IMPORTANCE_LABELS",
    "METHOD_LABELS",
    "PARAM_CONTROLS",
    "PAGE_EVAL_SAMPLES",
    "build_merge_tab",
    "default_config",
    "warm_references",
    "controls_from_config",
    "fraction_text",
    "merge_config",
    "param_values",
    "read_uploaded_config",
    "remember_downloads",
    "run_downloads",
    "run_merge",
    "save_merged_model",
    "source_settings",
]

#: the shipped zoo's card, whose claims the Merge tab lists (read as JSON: no torch import)
_ZOO_CARD = Path(__file__).resolve().parents[2] / "assets" / "zoo" / "card.json"

#: evaluation images per task the page starts with: 0 = the whole split (the zoo card's numbers);
#: a seeded subset (e.g. 500) keeps runs on large models or busy machines interactive
PAGE_EVAL_SAMPLES = 0

DEFAULT_METHOD = "sta"


def _label(method: str) -> str:
    spec = MERGE_METHODS[method]
    return spec.summary if spec.summary.startswith(spec.short) else f"{spec.short}: {spec.summary}"


#: (label, method) of every method the page can run: the registry's, with its one-line summary
METHOD_LABELS = [
    (f"{MERGE_METHODS[m].short}: {MERGE_METHODS[m].summary}", m) for m in MERGE_CHOICES
]
#: (method, parameter) of every parameter control, in the order ``merge_config`` takes them
PARAM_CONTROLS: tuple[tuple[str, Param], ...] = tuple(
    (method, param) for method in MERGE_CHOICES for param in page_params("merge", method)
)
IMPORTANCE_LABELS = [
    ("lp: loss preservation (STA Eq. 12)", "lp"),
    ("amp: amplitude theta^2", "amp"),
    ("lp_amp: lp x amp", "lp_amp"),
    ("fisher: diagonal Fisher (TaLoS Eq. 7)", "fisher"),
    ("magnitude: |tau|", "magnitude"),
    ("random (control)", "random"),
]


def merge_config(
    source: dict | None,
    tasks: list[str],
    method: str,
    importance: str,
    samples: float,
    seed: float,
    max_samples: float | None,
    split: str,
    *param_values: Any,
) -> RunConfig:
    """The run config of the Merge tab's controls (values as the page sends them): the fixed
    settings, then one value per entry of ``PARAM_CONTROLS`` (only the chosen method's are read)."""
    if not tasks:
        raise InputError("no task is ticked; tick at least two tasks to merge")
    params = {p.name: v for (m, p), v in zip(PARAM_CONTROLS, param_values) if m == method}
    return config_from_source(
        source,
        action="merge",
        tasks=list(tasks),
        method=method,
        params=params,
        importance=importance,
        samples=int(samples),
        seed=int(seed),
        max_samples=int(max_samples) if max_samples else None,
        split=split,
    )


def param_values(method: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Values of every parameter control: ``params`` for the method's own, defaults elsewhere."""
    params = params or {}
    return [params.get(p.name, p.default) if m == method else p.default for m, p in PARAM_CONTROLS]


def fraction_text(method: str, params: dict[str, Any], n_tasks: int) -> str:
    """What the chosen method's parameters mean in kept entries, shown beside its controls."""
    if method == "sta":
        p = float(params.get("p", 0.7))
        return f"{sta_kept_text(p, n_tasks)} {distinct_p_text(n_tasks)}".rstrip()
    if "keep" in params:
        return f"Keeps the top **{float(params['keep']):.0%}** of each task vector by magnitude."
    if "sparsity" in params:
        kept = 1 - float(params["sparsity"])
        return f"Bottom-k masks keep the **{kept:.0%}** least important entries of each task."
    return MERGE_METHODS[method].summary if method in MERGE_METHODS else ""


def run_merge(
    cfg: RunConfig, history: list[dict] | None, progress: Any = None, references: bool = True
):
    """Merge + evaluate; returns (per-task table, figure, mean text, history, history frame).

    ``references``: also measure the run against zero-shot, fine-tuned, task arithmetic (lambda
    chosen on val) and, for importance-masked methods, random importance, with 95% intervals."""
    service = explorer(cfg)
    table = service.run_merge(cfg, gr_progress(progress))
    row = history_row(cfg, table, len(history or []) + 1)
    figure = accuracy_figure(table, title=_title(cfg))
    mean = mean_markdown(table, cfg)
    if references:
        from ..analyses.references import references_table, run_references

        found = references_table(run_references(service, cfg, gr_progress(progress)))
        mark_references(figure, found)
        mean += "\n\n" + interval_markdown(found)
        row.update(history_extras(found, cfg.to_dict()))
    history = list(history or []) + [row]
    return table, figure, mean, history, history_frame(history)


def default_config(source: dict | None) -> RunConfig:
    """The run the Merge tab's Run button makes before any control is touched."""
    tasks = explorer(config_from_source(source)).tasks
    values = param_values("sta")
    return merge_config(source, tasks, "sta", "lp", 32, 0, PAGE_EVAL_SAMPLES, "test", *values)


def warm_references(source: dict | None) -> None:
    """The references of the default run (task arithmetic with lambda chosen on val, random
    importance): computed at start-up, and from the disk cache on every later start."""
    from ..analyses.references import run_references

    cfg = default_config(source)
    run_references(explorer(cfg), cfg)


def _title(cfg: RunConfig) -> str:
    used = cfg.settings_text()
    return f"{cfg.method} ({used}) on {len(cfg.tasks)} tasks"


def _downloads(cfg: RunConfig, figure: Any, table: pd.DataFrame, history: list[dict]):
    """One run's files: its config, its figure, its per-task table, and all runs so far."""
    return [
        write_text("run_config.json", cfg.to_json()),
        *write_figures({"merge_accuracy.html": figure}),
        write_text("merge_results.csv", percent_table(table).to_csv(index=False)),
        write_text("all_runs.csv", history_frame(history).to_csv(index=False)),
    ]


def remember_downloads(history: list[dict] | None, files: Any, store: dict | None):
    """Keep the files of the run just added to the history under its run number, so every row
    of the runs table keeps its own downloads; returns (store, run picker update)."""
    store = dict(store or {})
    if history and files:
        store[str(history[-1]["run"])] = [str(f) for f in files]
    runs = sorted(store, key=int)
    return store, gr.update(choices=runs, value=runs[-1] if runs else None)


def run_downloads(run: Any, store: dict | None) -> list[str]:
    """The files of the picked run (none before the first run)."""
    return list((store or {}).get(str(run), [])) if run not in (None, "") else []


def _controls_column(task_names: list[str]) -> dict[str, Any]:
    """Left column: tasks, method, the chosen method's parameters (one control per parameter of
    every method, only the chosen method's visible), evaluation settings and the Run button."""
    c: dict[str, Any] = {}
    c["tasks"] = gr.CheckboxGroup(
        task_names, value=task_names, label="Tasks", elem_id="merge-tasks"
    )
    c["method"] = gr.Dropdown(
        METHOD_LABELS, value=DEFAULT_METHOD, label="Method", elem_id="merge-method"
    )
    c["groups"], c["params"] = {}, []
    for method in MERGE_CHOICES:
        with gr.Group(visible=method == DEFAULT_METHOD) as group:
            for m, param in PARAM_CONTROLS:
                if m == method:
                    control = param_control(param, param.default, f"merge-{method}-{param.name}")
                    c["params"].append(control)
        c["groups"][method] = group
    c["kept"] = gr.Markdown(
        fraction_text(DEFAULT_METHOD, {}, len(task_names)), elem_id="merge-kept"
    )
    with gr.Group(visible=_reads_importance(DEFAULT_METHOD)) as c["importance_group"]:
        c["importance"] = gr.Dropdown(IMPORTANCE_LABELS, value="lp", label="Importance metric")
        c["samples"] = gr.Slider(1, 256, value=32, step=1, label="Ns (samples for lp / fisher)")
    with gr.Accordion("Advanced", open=False):
        c["seed"] = gr.Number(0, precision=0, label="Seed of the importance samples")
        c["max_samples"] = gr.Number(
            PAGE_EVAL_SAMPLES,
            precision=0,
            label="Evaluation images per task (0 = the whole split)",
            info="a seeded subset (e.g. 500) makes runs faster; the run config records it",
        )
        c["split"] = gr.Radio(["test", "val"], value="test", label="Evaluation split")
    c["run"] = gr.Button("Run", variant="primary", elem_id="merge-run")
    return c


def _reads_importance(method: str) -> bool:
    return MERGE_METHODS[method].needs not in (None, "adaptation")


def _method_switch(method: str) -> list[Any]:
    """Show the chosen method's controls (and the importance settings if it reads them)."""
    shown = [gr.update(visible=m == method) for m in MERGE_CHOICES]
    return [*shown, gr.update(visible=_reads_importance(method))]


def _results_column() -> dict[str, Any]:
    """Right column: chart, mean, this run's table, all runs, downloads."""
    r: dict[str, Any] = {}
    claims = zoo_claims_markdown(_ZOO_CARD)
    if claims:
        with gr.Accordion("What this zoo shows (measured on its test images)", open=False):
            gr.Markdown(claims, elem_id="merge-zoo-claims")
    r["chart"] = gr.Plot(label="Per-task accuracy", elem_id="merge-chart")
    r["mean"] = gr.Markdown(elem_id="merge-mean")
    r["table"] = gr.Dataframe(
        pd.DataFrame(columns=["task", *PERCENT_COLUMNS]),
        label="This run (accuracy in %)",
        elem_id="merge-table",
        interactive=False,
    )
    r["runs"] = gr.Dataframe(
        pd.DataFrame(columns=list(HISTORY_COLUMNS)),
        label="All runs (compare settings; accuracy in %)",
        elem_id="merge-history",
        interactive=False,
    )
    with gr.Row():
        r["run_a"] = gr.Number(2, precision=0, label="Compare run", min_width=80)
        r["run_b"] = gr.Number(1, precision=0, label="with run", min_width=80)
        r["compare"] = gr.Button("Compare on the same images", elem_id="merge-compare")
    r["comparison"] = gr.Markdown(elem_id="merge-comparison")
    with gr.Row(equal_height=True):
        r["files_run"] = gr.Dropdown(
            [], label="Downloads of run", scale=0, min_width=140, elem_id="merge-files-run"
        )
        r["files"] = gr.File(
            label="Downloads: run config, figure, this run's CSV, all runs' CSV",
            file_count="multiple",
            scale=4,
            elem_id="merge-files",
        )
    with gr.Row():
        r["model_btn"] = gr.Button("Build merged model (.safetensors)")
        r["upload"] = gr.UploadButton(
            "Load run config (JSON)", file_types=[".json"], elem_id="merge-upload"
        )
    r["model_file"] = gr.File(label="Merged model")
    return r


#: the Merge tab's fixed controls, in the order ``merge_config`` takes them (then PARAM_CONTROLS)
CONTROL_NAMES = ("tasks", "method", "importance", "samples", "seed", "max_samples", "split")


def build_merge_tab(source_state: gr.State, task_names: list[str]) -> dict[str, Any]:
    """Lay out the Merge tab; returns its components (the page wires source changes to them)."""
    history, last_config, run_files = gr.State([]), gr.State(None), gr.State({})
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            c = _controls_column(task_names)
        with gr.Column(scale=2):
            r = _results_column()
    controls = [c[name] for name in CONTROL_NAMES] + c["params"]
    groups = [c["groups"][m] for m in MERGE_CHOICES] + [c["importance_group"]]
    c["method"].change(
        _method_switch, c["method"], groups, show_progress="hidden", api_visibility="private"
    )

    def kept(method, tasks, *values):
        chosen = {p.name: v for (m, p), v in zip(PARAM_CONTROLS, values) if m == method}
        return fraction_text(method, chosen, len(tasks or []))

    kept_inputs = [c["method"], c["tasks"], *c["params"]]
    for control in kept_inputs:
        control.change(
            kept, kept_inputs, c["kept"], show_progress="hidden", api_visibility="private"
        )

    @user_errors
    def on_run(source, history_value, *values, progress=gr.Progress()):  # noqa: B008
        cfg = merge_config(source, *values)
        result, figure, mean_text, hist, frame = run_merge(cfg, history_value, progress)
        shown = styled(percent_table(result), PERCENT_COLUMNS)
        runs = styled(frame, [c for c in frame.columns if c != "run"])
        files = _downloads(cfg, figure, result, hist)
        return figure, mean_text, shown, runs, hist, cfg.to_dict(), files

    outputs = [r["chart"], r["mean"], r["table"], r["runs"], history, last_config, r["files"]]
    c["run"].click(on_run, [source_state, history, *controls], outputs, api_name="merge").then(
        remember_downloads,
        [history, r["files"], run_files],
        [run_files, r["files_run"]],
        show_progress="hidden",
        api_visibility="private",
    )
    r["files_run"].input(
        run_downloads, [r["files_run"], run_files], r["files"], api_visibility="private"
    )

    @user_errors
    def on_model(cfg_dict, progress=gr.Progress()):  # noqa: B008
        return save_merged_model(cfg_dict, progress)

    r["model_btn"].click(on_model, [last_config], r["model_file"], api_name="merged_model")

    @user_errors
    def on_compare(history_value, first, second, progress=gr.Progress()):  # noqa: B008
        return compare_runs(history_value, first, second)

    r["compare"].click(
        on_compare, [history, r["run_a"], r["run_b"]], r["comparison"], api_name="compare_runs"
    )

    # the run-config upload is wired by the page: it may switch the source of every tab
    return {
        "tasks": c["tasks"],
        "controls": controls,
        "history": history,
        "run": c["run"],
        "upload": r["upload"],
    }


def save_merged_model(cfg_dict: dict | None, progress: Any = None) -> str:
    """Write the merged image tower of the last run as safetensors, its config in the metadata."""
    from ..io import save_state_dict  # imports torch: only when a model is saved

    if not cfg_dict:
        raise InputError("no merge has run yet; press Run first, then build the merged model")
    cfg = RunConfig.from_dict(cfg_dict)
    state = explorer(cfg).merged_state(cfg, gr_progress(progress))
    path = download_dir() / f"merged_{cfg.method}.safetensors"
    save_state_dict(state, path, metadata={"run_config": cfg.to_json()})
    return str(path)


def source_settings(cfg: RunConfig) -> dict[str, Any]:
    """The per-user source state (``gr.State``) a config names."""
    return {name: getattr(cfg, name) for name in DEFAULT_SOURCE}


def controls_from_config(cfg: RunConfig) -> list[Any]:
    """Source settings + the Merge tab's control values of an uploaded config, in control order."""
    if cfg.action != "merge":
        raise InputError("this run config is a forgetting run; load it in the Forget tab")
    if any(isinstance(v, list) for v in cfg.params.values()):
        raise InputError(
            "this run config sets one value per task, which the page cannot show; run it with "
            "`python -m taskarith_core run --config`"
        )
    tasks = cfg.tasks or explorer(cfg).tasks
    return [
        source_settings(cfg),
        tasks,
        cfg.method,
        cfg.importance,
        cfg.samples,
        cfg.seed,
        cfg.max_samples or 0,
        cfg.split,
        *param_values(cfg.method, cfg.params),
    ]
