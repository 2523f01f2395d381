"""Disentanglement tab: xi(alpha1, alpha2) for two tasks, two paradigms side by side.

Each heatmap is ``analyses.xi.disentanglement_grid`` on one source (cached in memory here and on
disk by the analysis); "STA-masked" edits both task vectors with their STA masks at p first.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from ..errors import InputError
from ..numbers import percent, styled
from ..runconfig import RunConfig
from .common import (
    config_from_source,
    explorer,
    gr_progress,
    user_errors,
    write_figures,
    write_text,
)
from .merge_tab import IMPORTANCE_LABELS

__all__ = ["XI_EDITS", "build_xi_tab", "summary_table", "xi_frame", "xi_views"]

XI_EDITS = [("task vectors as fine-tuned", "plain"), ("STA-masked task vectors (p)", "sta")]
XI_GRIDS = [
    ("15 x 15 on [-2, 2] (Ortiz-Jimenez et al.)", "ortiz"),
    ("20 x 20 on [-3, 3] (TaLoS)", "talos"),
]
#: grid rows evaluated in parallel on a CPU, one image tower each (torch at one thread per
#: computation, the app's default): 1.5x faster on two cores than one row at a time
XI_WORKERS = 2
PARADIGM_WORDS = {
    "full": "full fine-tuning",
    "attention": "attention-only fine-tuning",
    "talos": "TaLoS sparse fine-tuning",
    "linearized": "linearised fine-tuning",
    "l-lora": "L-LoRA",
    "lota": "LoTA sparse fine-tuning",
}
SIDE_CHOICES = [
    ("none", "none"),
    ("full", "full"),
    ("attention-only", "attention"),
    ("TaLoS", "talos"),
    ("linearised", "linearized"),
    ("L-LoRA", "l-lora"),
    ("LoTA", "lota"),
]
#: paradigm B: every other paradigm the zoo holds, one panel each
ALL_OTHERS = ("every other paradigm of the zoo", "all")


def xi_frame(
    cfg: RunConfig,
    task1: str,
    task2: str,
    edit: str,
    grid: str,
    distance: str,
    samples: int,
    progress: Any = None,
) -> pd.DataFrame:
    """The xi grid of one source (the config's) for a pair of tasks."""
    from ..analyses.xi import XI_PRESETS, disentanglement_grid
    from ..executor import page_executor

    if not task1 or not task2 or task1 == task2:
        raise InputError("xi compares two different tasks; pick task 1 and task 2")
    if grid not in XI_PRESETS:
        raise InputError(f"unknown xi grid {grid!r}; pick one of {', '.join(XI_PRESETS)}")
    service = explorer(cfg)
    pair = [task1, task2]
    service.resolve_tasks(pair)
    vectors = None
    label = f"{service.source.name}"
    if edit == "sta":
        vectors = service.masked_task_vectors(cfg, pair)
        label += f" STA p={cfg.param('p'):.2f} {cfg.importance}"
    key = (
        "xi",
        tuple(pair),
        edit,
        cfg.param("p") if edit == "sta" else None,
        cfg.importance,
        grid,
        distance,
        samples,
        cfg.seed,
    )
    return service.memo(
        key,
        lambda: disentanglement_grid(
            service.source,
            task1,
            task2,
            vectors=vectors,
            grid=XI_PRESETS[grid],
            distance=distance,
            samples=int(samples),
            seed=cfg.seed,
            device=service.device,
            label=label,
            workers=XI_WORKERS if str(service.device).startswith("cpu") else 1,
            progress=gr_progress(progress),
            executor=page_executor(),  # a Ray cluster when the page was started with --ray
        ),
    )


def _side_title(source: dict | None, side: str, which: str) -> str:
    """'Paradigm A: full fine-tuning' on the zoo; a manifest has one set of checkpoints."""
    if (source or {}).get("source", "zoo") != "zoo":
        return f"Paradigm {which}"
    return f"Paradigm {which}: {PARADIGM_WORDS.get(side, side)}"


def _labelled(progress: Any, prefix: str) -> Any:
    """A ``gr.Progress`` look-alike whose messages start with the paradigm being computed."""
    if progress is None:
        return None

    def update(value: Any, desc: str | None = None, **kwargs: Any) -> Any:
        return progress(value, desc=f"{prefix}: {desc}" if desc else prefix, **kwargs)

    return update


def xi_views(
    source: dict | None,
    task1: str,
    task2: str,
    side_a: str,
    side_b: str,
    edit: str,
    grid: str,
    distance: str,
    samples: float,
    importance: str,
    p: float,
    progress: Any = None,
) -> tuple[Any, Any, pd.DataFrame]:
    """Heatmaps for paradigm A and B (B optional, zoo only) and their summary table."""
    from ..analyses.figures import xi_figure
    from ..analyses.xi import xi_summary

    frames, titles = [], []
    for side, which in _sides(source, side_a, side_b):
        overrides: dict[str, Any] = {"tasks": [task1, task2], "importance": importance}
        if (source or {}).get("source", "zoo") == "zoo":
            overrides["paradigm"] = side
        elif side != side_a:
            raise InputError("a manifest has one set of checkpoints; set paradigm B to none")
        cfg = config_from_source(source, params={"p": float(p)}, **overrides)
        title = _side_title(source, side, which)
        shown = _labelled(progress, title)
        frames.append(
            (which, xi_frame(cfg, task1, task2, edit, grid, distance, int(samples), shown))
        )
        titles.append(title)
    if not frames:
        raise InputError("both paradigms are 'none'; pick at least paradigm A")
    top = max(float(f["xi"].max()) for _, f in frames) or 1.0  # one colour scale for all
    figs = {"A": [], "B": []}
    for (which, frame), title in zip(frames, titles):
        fig = xi_figure(frame, title=f"{title} ({frame['label'].iloc[0]})")
        fig.update_traces(zmin=0.0, zmax=top)
        figs[which].append(fig)
    first = figs["A"][0] if figs["A"] else None
    second = figs["B"][0] if len(figs["B"]) == 1 else _panels(figs["B"])
    return first, second, xi_summary(pd.concat([f for _, f in frames], ignore_index=True))


def _sides(source: dict | None, side_a: str, side_b: str) -> list[tuple[str, str]]:
    """(paradigm, "A" / "B") to compute; "all" for B means every other paradigm of the zoo."""
    sides = [(side_a, "A")] if side_a != "none" else []
    if side_b == "all":
        from ..zoo.source import zoo_paradigms

        if (source or {}).get("source", "zoo") != "zoo":
            raise InputError("a manifest has one set of checkpoints; set paradigm B to none")
        root = (source or {}).get("zoo_root")
        sides += [(p, "B") for p in zoo_paradigms(root) if p != side_a]
    elif side_b != "none":
        sides.append((side_b, "B"))
    return sides


def _panels(figures: list[Any]) -> Any:
    """Several xi heatmaps in one figure, two per row, on the colour scale they already share."""
    if not figures:
        return None
    from plotly.subplots import make_subplots

    cols = min(2, len(figures))
    rows = -(-len(figures) // cols)
    names = [f.layout.title.text.split("<br>")[0] for f in figures]
    out = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for index, fig in enumerate(figures):
        trace = fig.data[0]
        trace.showscale = index == 0
        out.add_trace(trace, row=index // cols + 1, col=index % cols + 1)
    out.update_layout(height=420 * rows, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    return out


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as the page shows it: xi to 3 decimals, the share of the grid in percent."""
    threshold = float(summary["threshold"].iloc[0]) if len(summary) else 0.1
    return pd.DataFrame(
        {
            "grid": summary["label"],
            "tasks": summary["task1"] + " + " + summary["task2"],
            "distance": summary["distance"],
            "mean xi": summary["mean_xi"].round(3),
            "max xi": summary["max_xi"].round(3),
            f"grid with xi < {threshold:g} (%)": percent(summary["fraction_below"]),
            f"area with xi < {threshold:g} (alpha units)": summary["area_below"].round(3),
        }
    )


def _controls(task_names: list[str]) -> list[Any]:
    """The tab's settings in three columns above the figures (the figures get the full width)."""
    first = task_names[0] if task_names else None
    second = task_names[1] if len(task_names) > 1 else first
    with gr.Row():
        with gr.Column(min_width=280):
            task1 = gr.Dropdown(task_names, value=first, label="Task 1", elem_id="xi-task1")
            task2 = gr.Dropdown(task_names, value=second, label="Task 2", elem_id="xi-task2")
            side_a = gr.Dropdown(SIDE_CHOICES[1:], value="full", label="Paradigm A")
            side_b = gr.Dropdown(
                [*SIDE_CHOICES, ALL_OTHERS], value="attention", label="Paradigm B (zoo only)"
            )
        with gr.Column(min_width=280):
            edit = gr.Radio(XI_EDITS, value="plain", label="Task vectors")
            importance = gr.Dropdown(IMPORTANCE_LABELS, value="lp", label="Importance (STA)")
            p = gr.Slider(0, 1, value=0.8, step=0.01, label="Quantile p (STA)")
        with gr.Column(min_width=280):
            grid = gr.Radio(XI_GRIDS, value="ortiz", label="Grid")
            distance = gr.Radio(
                [("prediction disagreement", "prediction"), ("KL", "kl")],
                value="prediction",
                label="Distance",
            )
            samples = gr.Slider(
                16, 2048, value=256, step=16, label="Samples per task", elem_id="xi-samples"
            )
    return [task1, task2, side_a, side_b, edit, grid, distance, samples, importance, p]


def build_xi_tab(source_state: gr.State, task_names: list[str]) -> dict[str, Any]:
    controls = _controls(task_names)
    run = gr.Button("Compute xi", variant="primary", elem_id="xi-run")
    with gr.Row(equal_height=True):
        plot_a = gr.Plot(label="Paradigm A", elem_id="xi-plot-a")
        plot_b = gr.Plot(label="Paradigm B", elem_id="xi-plot-b")
    summary = gr.Dataframe(
        label="Summary (mean xi, share and area of the grid with xi < 0.1)",
        interactive=False,
        elem_id="xi-summary",
    )
    files = gr.File(label="Figures (HTML) and CSV", file_count="multiple")

    @user_errors
    def on_run(source, *values, progress=gr.Progress()):  # noqa: B008
        fig_a, fig_b, table = xi_views(source, *values, progress=progress)
        downloads = write_figures({"xi_a.html": fig_a, "xi_b.html": fig_b})
        downloads.append(write_text("xi_summary.csv", table.to_csv(index=False)))
        shown = summary_table(table)
        return fig_a, fig_b, styled(shown, [c for c in shown if c.endswith("(%)")]), downloads

    run.click(on_run, [source_state, *controls], [plot_a, plot_b, summary, files], api_name="xi")
    return {"single": [(controls[0], 0), (controls[1], 1)]}
