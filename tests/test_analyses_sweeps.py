"""Sweeps, scaling with N, Ns stability and the TaLoS-style bottom-k masks."""

from __future__ import annotations

import pytest
import torch

from taskarith_core.analyses.stability import importance_stability
from taskarith_core.analyses.sweeps import (
    METHODS,
    accuracy_sweep,
    bottom_k_masks,
    method_spec,
    task_count_scaling,
)
from taskarith_core.errors import InputError
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_sweeps"), n_tasks=3)


def test_method_table_names_the_papers_grids():
    assert METHODS["ta"].param == "lam" and METHODS["ta"].grid[0] == 0.05
    assert METHODS["ta"].grid[-1] == 1.0 and len(METHODS["ta"].grid) == 20
    assert METHODS["sta-lp"].metric == "lp" and METHODS["sta-lpamp"].metric == "lp_amp"
    assert METHODS["bottomk-fisher"].grid[-2:] == (0.95, 0.99)
    with pytest.raises(InputError, match="unknown method"):
        method_spec("nope")


def test_bottom_k_masks_keep_the_least_sensitive_fraction():
    scores = [{"visual.a": torch.arange(10.0), "visual.b": torch.arange(10.0, 20.0)}]
    (mask,) = bottom_k_masks(scores, 0.9)
    assert int(mask["visual.a"].sum()) == 2 and int(mask["visual.b"].sum()) == 0
    assert mask["visual.a"][:2].all()
    (mask,) = bottom_k_masks(scores, 0.0)
    assert all(bool(v.all()) for v in mask.values())
    frozen = {
        **scores[0],
        "visual.positional_embedding": torch.zeros(4),
        "visual.proj": torch.zeros(2),
    }
    (mask,) = bottom_k_masks([frozen], 0.5)
    assert not mask["visual.positional_embedding"].any() and not mask["visual.proj"].any()
    assert int(mask["visual.a"].sum()) == 10  # the lowest half of the 20 maskable entries
    with pytest.raises(InputError, match="sparsity"):
        bottom_k_masks(scores, 1.0)


def test_accuracy_sweep_rows_and_mean(tiny):
    frame = accuracy_sweep(tiny, "ta", [0.0, 1.0], split="val")
    assert set(frame["task"]) == {"task0", "task1", "task2", "mean"}
    assert len(frame) == 2 * 4 and set(frame["split"]) == {"val"}
    per_task = frame[(frame["task"] != "mean") & (frame["value"] == 0.0)]
    mean = frame[(frame["task"] == "mean") & (frame["value"] == 0.0)]
    assert mean["accuracy"].iloc[0] == pytest.approx(per_task["accuracy"].mean())
    # lambda = 0 is the pretrained model: its normalised accuracy is zero-shot / fine-tuned.
    assert (per_task["normalised"] < 1.0).all()
    sta = accuracy_sweep(tiny, "sta-amp", [0.5], tasks=["task0", "task1"])
    assert set(sta["param"]) == {"p"}
    with pytest.raises(InputError, match="no values"):
        accuracy_sweep(tiny, "ta", [])


def test_sta_sweep_defaults_to_the_distinct_p_values(tiny):
    frame = accuracy_sweep(tiny, "sta-random", tasks=["task0", "task1", "task2"], split="val")
    assert sorted(set(frame["value"])) == [0.0, 0.5]  # 3 tasks: 2 distinct masks


def test_sweep_over_a_non_default_parameter(tiny):
    frame = accuracy_sweep(tiny, "ties", [0.1, 1.0], param="keep", tasks=["task0", "task1"])
    assert set(frame["param"]) == {"keep"} and set(frame["value"]) == {0.1, 1.0}


def test_scaling_counts_subsets(tiny):
    frame = task_count_scaling(tiny, {"ta": 0.5}, subsets=2, seed=3)
    assert sorted(frame["n_tasks"].tolist()) == [2, 2, 3]
    assert all(len(t.split(",")) == n for t, n in zip(frame["tasks"], frame["n_tasks"]))
    with pytest.raises(InputError, match="task counts"):
        task_count_scaling(tiny, {"ta": 0.5}, counts=[1])


def test_importance_stability_reference_iou_is_one(tiny):
    frame = importance_stability(tiny, "random", (1, 2), tasks=["task0", "task1"], p=0.5)
    ref = frame[frame["samples"] == 2]
    assert ref["iou_vs_reference"].to_numpy() == pytest.approx([1.0, 1.0, 1.0])
    assert set(frame["task"]) == {"task0", "task1", "mean"}


def test_pairwise_ns_iou(tiny):
    from taskarith_core.analyses.geometry import ns_mask_iou

    frame = ns_mask_iou(tiny, "amp", (4, 2), tasks=["task0", "task1"], p=0.5)
    assert set(frame["task"]) == {"task0", "task1", "mean"}
    assert len(frame) == 3 * 4  # 2 x 2 pairs of Ns per task and for the mean
    same = frame[frame["samples_a"] == frame["samples_b"]]
    assert same["iou"].to_numpy() == pytest.approx(1.0)
    # amp does not read data: every Ns gives the same masks
    assert frame["iou"].to_numpy() == pytest.approx(1.0)
