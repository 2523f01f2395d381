"""How a merge result is shown: the per-task accuracy chart, the mean line, the runs table.

Shared by the page and ``python -m taskarith_core run``, so both print the same numbers with the
same rounding. No torch import here (the page is served before the engine loads).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..numbers import hover_percent, mean_percent, percent, percent_text
from ..runconfig import RunConfig

__all__ = [
    "HISTORY_COLUMNS",
    "PERCENT_COLUMNS",
    "accuracy_figure",
    "history_frame",
    "history_row",
    "mean_markdown",
    "negation_percent",
    "percent_table",
    "sta_fraction_kept",
    "sta_kept_text",
]

HISTORY_COLUMNS = ("run", "source", "method", "settings", "tasks", "mean", "mean normalised")
PERCENT_COLUMNS = ("zeroshot", "finetuned", "merged", "normalised", "zeroshot_normalised")
_COLOURS = {"zero-shot": "#9e9e9e", "fine-tuned": "#1f77b4", "merged": "#ff7f0e"}


def sta_fraction_kept(p: float, n_tasks: int) -> float:
    """Share of each task's entries STA keeps at p when importances have no ties (Eq. 14-17).

    The threshold sits at rank L = 1 + (N-1) p; entries strictly above it survive, so each element
    keeps N - floor(L) tasks: pairs of p values give the same masks, which the page says.
    """
    if n_tasks < 2:
        return 0.0
    rank = 1 + (n_tasks - 1) * p
    return max(n_tasks - math.floor(rank + 1e-9), 0) / n_tasks


def sta_kept_text(p: float, n_tasks: int) -> str:
    if n_tasks < 2:
        return "Tick at least two tasks to merge."
    fraction = sta_fraction_kept(p, n_tasks)
    per_element = round(fraction * n_tasks)
    return (
        f"p = {p:.2f} keeps **{percent_text(fraction)}** of each task's entries "
        f"({per_element} of {n_tasks} tasks per element, without ties)."
    )


def percent_table(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracies in percent rounded to 2 decimals: exactly what the page and CLI print."""
    return table.assign(**{c: percent(table[c]) for c in PERCENT_COLUMNS if c in table})


def negation_percent(table: pd.DataFrame) -> pd.DataFrame:
    """A forgetting table (before / after on [0, 1]) in percent, as the page and CLI print it."""
    return table.assign(
        before=percent(table["before"]),
        after=percent(table["after"]),
        ratio=table["ratio"].round(3),
    )


def accuracy_figure(table: pd.DataFrame, title: str) -> go.Figure:
    """Zero-shot / fine-tuned / merged per task and their mean, absolute and normalised."""
    tasks = list(table["task"]) + ["mean"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Absolute accuracy (%)", "Normalised accuracy (% of fine-tuned)"),
    )
    series = {
        "zero-shot": (table["zeroshot"], table["zeroshot_normalised"]),
        "fine-tuned": (table["finetuned"], table["finetuned"] / table["finetuned"]),
        "merged": (table["merged"], table["normalised"]),
    }
    for name, (absolute, normalised) in series.items():
        for col, values in ((1, absolute), (2, normalised)):
            y = [100 * v for v in values] + [100 * float(values.mean())]
            fig.add_trace(
                go.Bar(
                    x=tasks,
                    y=y,
                    name=name,
                    marker_color=_COLOURS[name],
                    showlegend=col == 1,
                    legendgroup=name,
                    hovertemplate=f"{name}<br>%{{x}}: {hover_percent()}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_layout(barmode="group", title=title, height=420, margin={"t": 80})
    fig.update_yaxes(title_text="accuracy (%)", range=[0, 105], row=1, col=1)
    fig.update_yaxes(title_text="normalised accuracy (%)", row=1, col=2)
    return fig


def mean_markdown(table: pd.DataFrame, cfg: RunConfig) -> str:
    merged, normalised = table["merged"].mean(), table["normalised"].mean()
    return (
        f"**Mean merged accuracy {percent_text(merged)}** (normalised {percent_text(normalised)}) "
        f"over {len(table)} tasks; zero-shot {percent_text(table['zeroshot'].mean())}, fine-tuned "
        f"{percent_text(table['finetuned'].mean())}. Method `{cfg.method}`."
    )


def history_row(cfg: RunConfig, table: pd.DataFrame, run: int) -> dict[str, Any]:
    """One line of the runs table: the settings the method used and the accuracies."""
    row: dict[str, Any] = {
        "run": run,
        "source": f"zoo/{cfg.paradigm}" if cfg.source == "zoo" else str(cfg.manifest),
        "method": cfg.method,
        "settings": cfg.settings_text(),
        "tasks": len(table),
        "mean": mean_percent(table["merged"]),
        "mean normalised": mean_percent(table["normalised"]),
    }
    for task, value in zip(table["task"], table["merged"]):
        row[task] = percent(value)
    return row


def history_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table as shown (fields starting with "_", e.g. a run's config, stay hidden)."""
    frame = pd.DataFrame(history)
    return frame.drop(columns=[c for c in frame.columns if str(c).startswith("_")])
