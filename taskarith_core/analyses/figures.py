"""Plotly figures, one function per analysis: DataFrame in, figure out.

Conventions: sequential colour scale for errors, rates and ratios (``Viridis``, fixed range where
the quantity has one), diverging scale centred on 0 for signed values (``RdBu``); every hover
names the task / layer / value, accuracies in percent with two decimals (as the page's tables);
titles say what was computed (method, p / k / lambda, paradigm).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..errors import InputError

__all__ = [
    "DIVERGING",
    "SEQUENTIAL",
    "cosine_figure",
    "iou_figure",
    "kernel_figure",
    "localisation_figure",
    "negation_figure",
    "rates_figure",
    "scaling_figure",
    "stability_figure",
    "sweep_figure",
    "xi_figure",
]

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"


def _param_label(frame: pd.DataFrame) -> str:
    """The swept parameter as the method's spec names it, with the paper's symbol."""
    from ..fusion import MERGE_METHODS
    from ..runconfig import SPARSITY

    param = str(frame["param"].iloc[0]) if "param" in frame.columns else "value"
    declared = [SPARSITY, *(p for spec in MERGE_METHODS.values() for p in spec.params)]
    symbol = next((p.symbol for p in declared if p.name == param and p.symbol), "")
    return f"{param} ({symbol})" if symbol else param


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise InputError(f"{what} figure needs a non-empty table with columns {columns}")


def _order(values: pd.Series) -> list:
    return list(dict.fromkeys(values.tolist()))


def _matrix(frame: pd.DataFrame, row: str, col: str, value: str) -> pd.DataFrame:
    table = frame.pivot_table(index=row, columns=col, values=value, aggfunc="mean", dropna=False)
    return table.reindex(index=_order(frame[row]), columns=_order(frame[col]))


def xi_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Heatmap of xi(alpha1, alpha2) for one grid (the first label / pair in the table).

    Square cells (both axes span the same alphas), a short two-line title and a one-word colour
    bar title, so the figure stays readable at half the page's width."""
    _require(frame, ["alpha1", "alpha2", "xi"], "xi")
    first = frame.iloc[0]
    part = frame
    for key in ("label", "task1", "task2", "distance"):
        if key in frame.columns:
            part = part[part[key] == first[key]]
    table = _matrix(part, "alpha2", "alpha1", "xi").sort_index().sort_index(axis=1)
    dist = first.get("distance", "prediction")
    unit = "share of samples, both tasks" if dist == "prediction" else "nats"
    task1, task2 = first.get("task1", "1"), first.get("task2", "2")
    fig = go.Figure(
        go.Heatmap(
            x=table.columns.tolist(),
            y=table.index.tolist(),
            z=table.to_numpy(),
            colorscale=SEQUENTIAL,
            zmin=0.0,
            colorbar={"title": {"text": "xi", "side": "top"}, "thickness": 14, "len": 0.85},
            hovertemplate="alpha1=%{x:.2f}<br>alpha2=%{y:.2f}<br>xi=%{z:.3f}<extra></extra>",
        )
    )
    grid = f"{len(table.columns)} x {len(table.index)}"
    default = f"{first.get('label', '')}: xi, {task1} + {task2}"
    detail = f"{'prediction disagreement' if dist == 'prediction' else 'KL'} ({unit}), {grid}"
    fig.update_layout(
        title={"text": f"{title or default}<br><sup>{detail}</sup>", "x": 0.02, "xanchor": "left"},
        height=520,
        margin={"l": 70, "r": 20, "t": 80, "b": 60},
    )
    fig.update_xaxes(title_text=f"alpha1 (tau of {task1})", constrain="domain")
    fig.update_yaxes(title_text=f"alpha2 (tau of {task2})", scaleanchor="x", constrain="domain")
    return fig


def kernel_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Non-linear vs post-hoc linearised accuracy per task (attention-only paper Fig. 3), one
    trace per label, with the equal-accuracy diagonal."""
    _require(frame, ["task", "nonlinear", "linearised"], "kernel")
    fig = go.Figure()
    labels = frame["label"] if "label" in frame.columns else pd.Series(["model"] * len(frame))
    for label in _order(labels):
        part = frame[labels.to_numpy() == label]
        fig.add_trace(
            go.Scatter(
                x=part["nonlinear"] * 100,
                y=part["linearised"] * 100,
                mode="markers+text",
                text=part["task"],
                textposition="top center",
                name=str(label),
                customdata=(part["nonlinear"] - part["linearised"]) * 100,
                hovertemplate="task %{text}<br>non-linear %{x:.2f}%<br>linearised %{y:.2f}%"
                "<br>gap %{customdata:.2f} points<extra>" + str(label) + "</extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 100],
            y=[0, 100],
            mode="lines",
            name="equal accuracy",
            line={"dash": "dash", "color": "grey"},
            hoverinfo="skip",
        )
    )
    fig.update_layout(
        title=title or "Kernel-behaviour test: post-hoc linearised vs non-linear accuracy",
        xaxis_title="non-linear fine-tuned accuracy (%)",
        yaxis_title="post-hoc linearised accuracy (%)",
    )
    return fig


def _pair_heatmap(
    table: pd.DataFrame,
    colorscale: str,
    zrange: tuple[float | None, float | None],
    name: str,
    row_label: str,
    col_label: str,
    zmid: float | None = None,
) -> go.Heatmap:
    return go.Heatmap(
        x=[str(c) for c in table.columns],
        y=[str(r) for r in table.index],
        z=table.to_numpy(),
        colorscale=colorscale,
        zmin=zrange[0],
        zmax=zrange[1],
        zmid=zmid,
        texttemplate="%{z:.2f}",
        colorbar={"title": {"text": name}},
        hovertemplate=(
            f"{row_label} %{{y}}<br>{col_label} %{{x}}<br>{name} %{{z:.3f}}<extra></extra>"
        ),
    )


def _group_grid(groups: list, titles: list[str]) -> go.Figure:
    cols = min(len(groups), 3)
    rows = -(-len(groups) // cols)
    return make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.14,
        vertical_spacing=0.22 if rows > 1 else 0.1,
    )


def _label_panels(fig: go.Figure, groups: list, x_title: str, y_title: str) -> None:
    """Task matrices read top-down like the papers' heatmaps; axis titles on the outer panels."""
    cols = min(len(groups), 3)
    rows = -(-len(groups) // cols)
    fig.update_yaxes(autorange="reversed")
    for index in range(len(groups)):
        row, col = index // cols + 1, index % cols + 1
        if col == 1:
            fig.update_yaxes(title_text=y_title, row=row, col=col)
        if row == rows or index + cols >= len(groups):
            fig.update_xaxes(title_text=x_title, row=row, col=col)
    fig.update_layout(height=max(450, 380 * rows + 120), width=max(600, 380 * cols + 160))


def cosine_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Cosine similarity between task vectors (attention-only paper Fig. 10), one panel a group."""
    _require(frame, ["group", "task_a", "task_b", "cosine"], "cosine")
    groups = _order(frame["group"])
    fig = _group_grid(groups, [str(g) for g in groups])
    for index, group in enumerate(groups):
        table = _matrix(frame[frame["group"] == group], "task_a", "task_b", "cosine")
        trace = _pair_heatmap(table, DIVERGING, (-1.0, 1.0), "cosine", "task", "task", zmid=0.0)
        trace.showscale = index == 0
        fig.add_trace(trace, row=index // 3 + 1, col=index % 3 + 1)
    by = frame["by"].iloc[0] if "by" in frame.columns else "whole"
    fig.update_layout(title=title or f"Cosine similarity between task vectors ({by})")
    _label_panels(fig, groups, "task vector", "task vector")
    return fig


def iou_figure(
    frame: pd.DataFrame, title: str | None = None, axis: str = "mask of task"
) -> go.Figure:
    """Mask IoU between tasks (TaLoS Fig. 11), whole model or per group; ``axis`` names what
    the rows and columns are (e.g. the Ns of each mask)."""
    _require(frame, ["group", "task_a", "task_b", "iou"], "IoU")
    groups = _order(frame["group"])
    fig = _group_grid(groups, [str(g) for g in groups])
    for index, group in enumerate(groups):
        table = _matrix(frame[frame["group"] == group], "task_a", "task_b", "iou")
        trace = _pair_heatmap(table, SEQUENTIAL, (0.0, 1.0), "IoU", axis, axis)
        trace.showscale = index == 0
        fig.add_trace(trace, row=index // 3 + 1, col=index % 3 + 1)
    fig.update_layout(title=title or "Mask intersection over union between tasks")
    _label_panels(fig, groups, axis, axis)
    return fig


def localisation_figure(
    frame: pd.DataFrame, normalise: str = "zeroshot", title: str | None = None
) -> go.Figure:
    """Accuracy ratio of theta_pre + tau_i on task j, rows = edited with. The default divides by
    the pre-trained model's accuracy on j, as TaLoS Fig. 3 does (the title says which)."""
    column = {"finetuned": "ratio_finetuned", "zeroshot": "ratio_zeroshot", "none": "accuracy"}
    if normalise not in column:
        raise InputError(f"unknown normalisation {normalise!r}; use finetuned, zeroshot or none")
    _require(frame, ["edited_with", "evaluated_on", column[normalise]], "localisation")
    table = _matrix(frame, "edited_with", "evaluated_on", column[normalise])
    name = {
        "finetuned": "acc / fine-tuned acc",
        "zeroshot": "acc / pre-trained acc, as TaLoS Fig. 3",
    }.get(normalise, "accuracy")
    fig = go.Figure(
        _pair_heatmap(table, SEQUENTIAL, (0.0, None), name, "edited with tau of", "evaluated on")
    )
    label = frame["label"].iloc[0] if "label" in frame.columns else ""
    fig.update_layout(
        title=title or f"Function localisation ({name}), {label}",
        xaxis_title="evaluated on task",
        yaxis_title="theta_pre + tau of task",
    )
    fig.update_yaxes(autorange="reversed")
    return fig


def rates_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Selection (remaining) rate per task x layer: one panel per tensor kind, side by side, each
    as wide as its number of layers, sharing the task axis and one layer-axis title."""
    _require(frame, ["task", "kind", "rate"], "selection-rate")
    layer = "tensor" if "tensor" in frame.columns else "block"
    if layer == "block":
        frame = frame.sort_values("block", kind="stable").assign(
            block=lambda f: f["block"].map(lambda b: "out" if b < 0 else str(b))
        )
    kinds = _order(frame["kind"])
    widths = [max(frame.loc[frame["kind"] == k, layer].nunique(), 1.5) for k in kinds]
    fig = make_subplots(
        rows=1,
        cols=len(kinds),
        column_widths=widths,
        shared_yaxes=True,
        horizontal_spacing=min(0.03, 0.3 / max(len(kinds), 1)),
        subplot_titles=[str(k) for k in kinds],
    )
    labelled = sum(widths) <= 30  # cell values as text only while cells are wide enough
    for index, kind in enumerate(kinds):
        table = _matrix(frame[frame["kind"] == kind], "task", layer, "rate")
        trace = _pair_heatmap(table, SEQUENTIAL, (0.0, 1.0), "rate", "task", layer)
        trace.showscale = index == 0
        trace.colorbar = {"title": {"text": "rate", "side": "top"}, "thickness": 14}
        if not labelled:
            trace.texttemplate = None
        fig.add_trace(trace, row=1, col=index + 1)
    tasks = frame["task"].nunique()
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(type="category", tickangle=0 if layer == "block" else -60)
    where = "block; out = embeddings, ln_post, proj" if layer == "block" else "tensor"
    fig.add_annotation(
        text=f"layer ({where})",
        x=0.5,
        y=0,
        xref="paper",
        yref="paper",
        yshift=-45 if layer == "block" else -160,
        showarrow=False,
    )
    fig.update_layout(
        title=title or "Fraction of entries selected per layer",
        height=max(300, 28 * tasks + (190 if layer == "block" else 300)),
        margin={"l": 110, "r": 30, "t": 90, "b": 70 if layer == "block" else 190},
    )
    return fig


def sweep_figure(
    frame: pd.DataFrame, metric: str = "normalised", title: str | None = None
) -> go.Figure:
    """Accuracy against the swept parameter: one line per task, the mean in bold."""
    _require(frame, ["value", "task", metric], "sweep")
    fig = go.Figure()
    for task in _order(frame["task"]):
        part = frame[frame["task"] == task].sort_values("value")
        fig.add_trace(
            go.Scatter(
                x=part["value"],
                y=part[metric] * 100,
                mode="lines+markers",
                name=str(task),
                line={"width": 4 if task == "mean" else 1.5},
                hovertemplate=f"task {task}<br>value %{{x}}<br>{metric} %{{y:.2f}}%<extra></extra>",
            )
        )
    method = frame["method"].iloc[0] if "method" in frame.columns else "merge"
    param = _param_label(frame)
    kind = "normalised accuracy (% of fine-tuned)" if metric == "normalised" else "accuracy (%)"
    fig.update_layout(
        title=title or f"{method}: {kind} against {param}", xaxis_title=param, yaxis_title=kind
    )
    return fig


def negation_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mean target and control accuracy against the parameter; the 95% control line; stars on
    each task's best value under the rule."""
    _require(
        frame, ["value", "target_accuracy", "control_accuracy", "control_zeroshot"], "negation"
    )
    means = frame.groupby("value", as_index=False)[["target_accuracy", "control_accuracy"]].mean()
    fig = go.Figure()
    for column, name in (
        ("target_accuracy", "target (mean)"),
        ("control_accuracy", "control (mean)"),
    ):
        fig.add_trace(
            go.Scatter(
                x=means["value"],
                y=means[column] * 100,
                mode="lines+markers",
                name=name,
                hovertemplate=f"{name}<br>value %{{x}}<br>accuracy %{{y:.2f}}%<extra></extra>",
            )
        )
    limit = 0.95 * float(frame["control_zeroshot"].iloc[0]) * 100
    fig.add_hline(
        y=limit,
        line_dash="dash",
        annotation_text="95% of zero-shot control",
        annotation_position="bottom left",
    )
    if "best" in frame.columns and frame["best"].any():
        best = frame[frame["best"]]
        fig.add_trace(
            go.Scatter(
                x=best["value"],
                y=best["target_accuracy"] * 100,
                mode="markers",
                name="best per task",
                marker={"symbol": "star", "size": 12},
                text=best["task"],
                hovertemplate="best for %{text}<br>value %{x}<br>target %{y:.2f}%<extra></extra>",
            )
        )
    method = frame["method"].iloc[0] if "method" in frame.columns else "negation"
    param = _param_label(frame)
    fig.update_layout(
        title=title or f"Task negation with {method}: accuracy against {param}",
        xaxis_title=param,
        yaxis_title="accuracy (%)",
    )
    return fig


def scaling_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mean normalised accuracy against the number of merged tasks, one line per method
    (subset mean), subsets as faint points."""
    _require(frame, ["method", "n_tasks", "mean_normalised"], "scaling")
    fig = go.Figure()
    for method in _order(frame["method"]):
        part = frame[frame["method"] == method]
        mean = part.groupby("n_tasks", as_index=False)["mean_normalised"].mean()
        fig.add_trace(
            go.Scatter(
                x=mean["n_tasks"],
                y=mean["mean_normalised"] * 100,
                mode="lines+markers",
                name=str(method),
                hovertemplate=f"{method}<br>N=%{{x}}<br>normalised %{{y:.2f}}%<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=part["n_tasks"],
                y=part["mean_normalised"] * 100,
                mode="markers",
                name=f"{method} subsets",
                opacity=0.35,
                showlegend=False,
                text=part.get("tasks"),
                hovertemplate="%{text}<br>normalised %{y:.2f}%<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or "Merging more tasks: mean normalised accuracy",
        xaxis_title="number of merged tasks",
        yaxis_title="mean normalised accuracy (%)",
    )
    return fig


def stability_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Mask IoU with the largest Ns, and merged normalised accuracy, against Ns (means)."""
    _require(frame, ["samples", "task", "iou_vs_reference", "normalised"], "stability")
    mean = frame[frame["task"] == "mean"].sort_values("samples")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=mean["samples"],
            y=mean["iou_vs_reference"],
            mode="lines+markers",
            name="mask IoU vs largest Ns",
            hovertemplate="Ns=%{x}<br>IoU %{y:.3f}<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=mean["samples"],
            y=mean["normalised"] * 100,
            mode="lines+markers",
            name="merged normalised accuracy",
            hovertemplate="Ns=%{x}<br>normalised %{y:.2f}%<extra></extra>",
        ),
        secondary_y=True,
    )
    metric = frame["metric"].iloc[0] if "metric" in frame.columns else "importance"
    p = frame["p"].iloc[0] if "p" in frame.columns else ""
    fig.update_layout(title=title or f"Stability of {metric} against Ns (STA, p={p})")
    fig.update_xaxes(title_text="samples Ns", type="log")
    fig.update_yaxes(title_text="IoU (0-1)", range=[0, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="normalised accuracy (%)", secondary_y=True)
    return fig
