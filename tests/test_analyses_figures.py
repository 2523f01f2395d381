"""Figures on small tables: trace types, data, colour scales, titles and axes (not pixels)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from taskarith_core.analyses import figures
from taskarith_core.errors import InputError


def test_xi_heatmap_is_sequential_and_shaped_by_the_grid():
    alphas = [-1.0, 0.0, 1.0]
    frame = pd.DataFrame(
        [(a1, a2, abs(a1) + 2 * abs(a2)) for a1 in alphas for a2 in alphas],
        columns=["alpha1", "alpha2", "xi"],
    ).assign(label="zoo/attention", task1="digits", task2="letters", distance="kl")
    fig = figures.xi_figure(frame)
    (trace,) = fig.data
    assert isinstance(trace, go.Heatmap)
    assert list(trace.x) == alphas and list(trace.y) == alphas
    assert trace.z[0][2] == pytest.approx(1.0 + 2.0)  # row alpha2=-1, column alpha1=1
    assert trace.zmin == 0.0
    assert "digits" in fig.layout.title.text and "zoo/attention" in fig.layout.title.text
    assert "alpha1" in fig.layout.xaxis.title.text and "nats" in fig.layout.title.text
    assert fig.layout.yaxis.scaleanchor == "x"  # square cells: the grid is not squeezed


def test_cosine_uses_a_diverging_scale_per_group():
    rows = [
        ("kind", g, a, b, (1.0 if a == b else -0.2))
        for g in ("attention", "mlp")
        for a in "xy"
        for b in "xy"
    ]
    frame = pd.DataFrame(rows, columns=["by", "group", "task_a", "task_b", "cosine"])
    fig = figures.cosine_figure(frame)
    assert len(fig.data) == 2
    assert all(isinstance(t, go.Heatmap) and t.zmid == 0.0 for t in fig.data)
    assert fig.data[0].zmin == -1.0 and fig.data[0].zmax == 1.0
    assert fig.data[0].z[0][1] == pytest.approx(-0.2)
    assert "kind" in fig.layout.title.text


def test_iou_and_localisation_heatmaps():
    iou = pd.DataFrame(
        [("whole", "all", a, b, 1.0 if a == b else 0.5) for a in "pq" for b in "pq"],
        columns=["by", "group", "task_a", "task_b", "iou"],
    )
    fig = figures.iou_figure(iou)
    assert fig.data[0].zmin == 0.0 and fig.data[0].zmax == 1.0
    loc = pd.DataFrame(
        {
            "edited_with": ["p", "p", "q", "q"],
            "evaluated_on": ["p", "q", "p", "q"],
            "accuracy": [0.9, 0.3, 0.2, 0.8],
            "ratio_finetuned": [1.0, 0.4, 0.25, 0.9],
            "ratio_zeroshot": [2.0, 0.9, 0.8, 1.8],
            "label": "zoo/full",
        }
    )
    fig = figures.localisation_figure(loc)  # default: / pre-trained accuracy, as TaLoS Fig. 3
    assert fig.data[0].z[1][1] == pytest.approx(1.8) and "TaLoS Fig. 3" in fig.layout.title.text
    assert list(fig.data[0].y) == ["p", "q"] and list(fig.data[0].x) == ["p", "q"]
    assert figures.localisation_figure(loc, "finetuned").data[0].z[0][1] == pytest.approx(0.4)
    with pytest.raises(InputError):
        figures.localisation_figure(loc, "median")


def test_rates_figure_has_one_panel_per_kind():
    frame = pd.DataFrame(
        {
            "task": ["a", "a", "b", "b"],
            "block": [0, 1, 0, 1],
            "kind": ["attention", "mlp", "attention", "mlp"],
            "rate": [0.1, 0.2, 0.3, 0.4],
        }
    )
    fig = figures.rates_figure(frame)
    assert len(fig.data) == 2
    assert fig.data[0].z[1][0] == pytest.approx(0.3)  # task b, block 0, attention
    assert list(fig.data[0].x) == ["0"]
    assert fig.layout.yaxis2.matches == "y" or fig.layout.yaxis2.showticklabels is False
    titles = [a.text for a in fig.layout.annotations if a.text.startswith("layer")]
    assert len(titles) == 1  # one layer-axis title for all panels, not one per panel


def test_sweep_and_negation_lines():
    sweep = pd.DataFrame(
        {
            "method": "sta-lp",
            "param": "p",
            "value": [0.1, 0.5, 0.1, 0.5, 0.1, 0.5],
            "task": ["a", "a", "b", "b", "mean", "mean"],
            "accuracy": [0.5, 0.6, 0.7, 0.8, 0.6, 0.7],
            "normalised": [0.55, 0.65, 0.75, 0.85, 0.65, 0.75],
        }
    )
    fig = figures.sweep_figure(sweep)
    assert [t.name for t in fig.data] == ["a", "b", "mean"]
    assert list(fig.data[2].y) == pytest.approx([65.0, 75.0])
    assert "sta-lp" in fig.layout.title.text and fig.layout.xaxis.title.text.startswith("p")
    neg = pd.DataFrame(
        {
            "method": "ta",
            "param": "lam",
            "value": [0.2, 0.4],
            "task": ["a", "a"],
            "target_accuracy": [0.4, 0.2],
            "control_accuracy": [0.8, 0.7],
            "control_zeroshot": [0.8, 0.8],
            "best": [True, False],
        }
    )
    fig = figures.negation_figure(neg)
    names = [t.name for t in fig.data]
    assert names == ["target (mean)", "control (mean)", "best per task"]
    assert list(fig.data[2].x) == [0.2]
    assert fig.layout.shapes[0].y0 == pytest.approx(76.0)


def test_kernel_scaling_and_stability_figures():
    kernel = pd.DataFrame(
        {
            "task": ["a", "b"],
            "label": ["zoo/full", "zoo/full"],
            "nonlinear": [0.9, 0.8],
            "linearised": [0.6, 0.7],
        }
    )
    fig = figures.kernel_figure(kernel)
    assert fig.data[0].mode == "markers+text" and list(fig.data[0].x) == pytest.approx([90, 80])
    assert fig.data[-1].name == "equal accuracy"
    scaling = pd.DataFrame(
        {
            "method": "ta",
            "n_tasks": [2, 2, 3],
            "tasks": ["a,b", "a,c", "a,b,c"],
            "mean_normalised": [0.8, 0.6, 0.5],
        }
    )
    fig = figures.scaling_figure(scaling)
    assert list(fig.data[0].y) == pytest.approx([70.0, 50.0])
    stability = pd.DataFrame(
        {
            "samples": [8, 64, 8, 64],
            "task": ["a", "a", "mean", "mean"],
            "iou_vs_reference": [0.5, 1.0, 0.5, 1.0],
            "normalised": [0.7, 0.8, 0.7, 0.8],
            "metric": "lp",
            "p": 0.7,
        }
    )
    fig = figures.stability_figure(stability)
    assert list(fig.data[0].y) == [0.5, 1.0] and fig.layout.xaxis.type == "log"


def test_empty_or_wrong_table_is_refused():
    with pytest.raises(InputError, match="xi figure"):
        figures.xi_figure(pd.DataFrame({"alpha1": []}))
