"""Streamed protocols: the same merged models and the same tables as the in-memory path, built
without ever loading a whole fine-tuned model."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from taskarith_core.analyses.negation import negated_state, negation_sweep
from taskarith_core.analyses.protocol import addition_protocol, negation_protocol
from taskarith_core.analyses.sweeps import prepare_method
from taskarith_core.errors import InputError
from taskarith_core.real.streamed import streamed_method, streamed_negation
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_streamed"), n_tasks=3)


@pytest.fixture(scope="module")
def tiny_talos(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_streamed_t"), n_tasks=2, paradigm="talos")


def _no_whole_models(source, monkeypatch):
    """Make any whole-model load during streaming an error."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the streamed path loaded a whole model")

    monkeypatch.setattr(source, "load_finetuned", refuse)
    monkeypatch.setattr(source, "load_pretrained", refuse)


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("method", "values"),
    [
        ("ta", [0.05, 0.3, 1.0]),
        ("ties", [0.2, 0.7]),
        ("dare", [0.4]),
        ("consensus", [0.4]),
        ("sta-amp", [0.3, 0.7]),
        ("sta-random", [0.5]),
        ("sta-lp", [0.7]),
        ("bottomk-fisher", [0.1, 0.5, 0.9]),
        ("pcb", [0.3]),
        ("breadcrumbs", [0.3]),
        ("tsv-m", [0.5]),
        ("iso-c", [0.5]),
        ("iso-cts", [0.5]),
        ("avg", [0.0]),
        ("avg+dare", [0.3]),
        ("ta+dare", [0.4]),
        ("ties+dare", [0.4]),
    ],
)
def test_streamed_merge_equals_in_memory_merge(tiny, monkeypatch, method, values):
    tasks = tiny.tasks
    reference = prepare_method(tiny, method, tasks, samples=8)
    expected = [reference.merge(v) for v in values]
    with monkeypatch.context() as patch:
        with streamed_method(tiny, method, tasks, values=values[:1], samples=8) as prep:
            _no_whole_models(tiny, patch)
            got = [prep.merge(v) for v in values]
    for want, have in zip(expected, got):
        _assert_same(want, have)


def test_talos_masked_merge_and_negation_stream_the_same(tiny_talos, monkeypatch):
    tasks = tiny_talos.tasks
    reference = prepare_method(tiny_talos, "talos-mask", tasks)
    pre = tiny_talos.load_pretrained()
    ft = tiny_talos.load_finetuned(tasks[0])
    mask = {k: v.bool() for k, v in tiny_talos.talos_mask(tasks[0]).items()}
    expected_neg = negated_state("talos-mask", pre, ft, 2.0, mask=mask)
    expected = reference.merge(3.0)
    with monkeypatch.context() as patch:
        with streamed_method(tiny_talos, "talos-mask", tasks) as prep:
            with streamed_negation(tiny_talos, "talos-mask", tasks[0]) as negate:
                _no_whole_models(tiny_talos, patch)
                got, got_neg = prep.merge(3.0), negate(2.0)
    _assert_same(expected, got)
    _assert_same(expected_neg, got_neg)


@pytest.mark.parametrize("method", ["ta", "sta-amp"])
def test_streamed_negation_equals_in_memory(tiny, method):
    pre = tiny.load_pretrained()
    ft = tiny.load_finetuned(tiny.tasks[1])
    from taskarith_core.analyses._common import task_importances

    imp = task_importances(tiny, [tiny.tasks[1]], "amp")[0] if method == "sta-amp" else None
    with streamed_negation(tiny, method, tiny.tasks[1]) as negate:
        for value in (0.3, 0.9):
            expected = negated_state(method, pre, ft, value, importance=imp)
            _assert_same(expected, negate(value))


def test_addition_table_and_choices_are_the_same_streamed(tiny):
    grids = {"ta": [0.1, 0.4, 1.0], "ties": [0.3, 1.0], "sta-amp": [0.5, 0.9]}
    methods = list(grids)
    memory = addition_protocol(tiny, methods, grids=grids, samples=8)
    streamed = addition_protocol(tiny, methods, grids=grids, samples=8, stream=True)
    pd.testing.assert_frame_equal(memory, streamed)


def test_negation_table_is_the_same_streamed(tiny):
    grids = {"ta": [0.2, 0.6, 1.0], "sta-amp": [0.5, 0.9]}
    memory = negation_protocol(tiny, list(grids), grids=grids)
    streamed = negation_protocol(tiny, list(grids), grids=grids, stream=True)
    pd.testing.assert_frame_equal(memory, streamed)
    sweep = negation_sweep(tiny, "ta", [0.5], split="val", stream=True)
    assert len(sweep) == len(tiny.tasks)


def test_streamed_bad_values_are_refused(tiny):
    with streamed_method(tiny, "sta-amp", tiny.tasks) as prep:
        with pytest.raises(InputError, match="outside"):
            prep.merge(1.5)
    with pytest.raises(InputError, match="sparsity"):
        with streamed_method(tiny, "fisher-mask", tiny.tasks, values=[1.0], samples=8):
            pass


def test_task_count_scaling_streams_the_same(tiny, monkeypatch):
    from taskarith_core.analyses.sweeps import task_count_scaling

    methods = {"ta": 0.4, "ties": 0.7}
    expected = task_count_scaling(tiny, methods, subsets=2, seed=1, samples=8, stream=False)
    with monkeypatch.context() as patch:
        _no_whole_models(tiny, patch)
        got = task_count_scaling(tiny, methods, subsets=2, seed=1, samples=8, stream=True)
    pd.testing.assert_frame_equal(expected, got)


def test_streamed_task_count_scaling_writes_each_importance_once(tiny, monkeypatch):
    """Dozens of subsets share one importance file per task (it was copied once per subset), and
    the numbers stay those of the in-memory path."""
    from taskarith_core.analyses.sweeps import task_count_scaling
    from taskarith_core.models import importance as model_importance

    methods = {"sta-lp": 0.6}
    expected = task_count_scaling(tiny, methods, subsets=3, seed=2, samples=8, stream=False)
    calls: list[str] = []
    real = model_importance.cached_importance

    def counting(source, task, *args, **kwargs):
        calls.append(task)
        return real(source, task, *args, **kwargs)

    with monkeypatch.context() as patch:
        _no_whole_models(tiny, patch)
        patch.setattr(model_importance, "cached_importance", counting)
        got = task_count_scaling(tiny, methods, subsets=3, seed=2, samples=8, stream=True)
    pd.testing.assert_frame_equal(expected, got)
    assert len(got) > len(tiny.tasks)  # more subsets than tasks, so sharing matters
    assert sorted(calls) == sorted(tiny.tasks)


def test_subset_views_share_side_files_and_refuse_unknown_tasks(tiny_talos):
    from taskarith_core.real.streamed import streamed_subsets

    tasks = tiny_talos.tasks
    with streamed_subsets(tiny_talos, tasks, samples=4) as open_method:
        with open_method("talos-mask", tasks[:1], values=[1.0]) as first:
            first_masks = first._masks
            first.merge(1.0)
        with open_method("talos-mask", tasks, values=[1.0]) as both:
            assert both._masks[0] is first_masks[0]  # the same open view, not a new copy
            both.merge(1.0)
        with pytest.raises(InputError, match="not among"):
            with open_method("ta", ["nope"]):
                pass


@pytest.mark.parametrize("metric", ["lp", "random"])
def test_importance_stability_streams_the_same(tiny, monkeypatch, metric):
    """Mask IoUs counted tensor by tensor and the streamed STA merges give the in-memory table,
    without loading a whole fine-tuned model."""
    from taskarith_core.analyses.stability import importance_stability

    args = dict(sample_counts=(2, 4), p=0.6, seed=1)
    expected = importance_stability(tiny, metric, stream=False, **args)
    with monkeypatch.context() as patch:
        _no_whole_models(tiny, patch)
        got = importance_stability(tiny, metric, stream=True, **args)
    pd.testing.assert_frame_equal(expected, got)
    assert (got[got["samples"] == 4]["iou_vs_reference"] == 1.0).all()
    assert got[got["samples"] == 2]["iou_vs_reference"].between(0, 1).all()


def test_streamed_stability_refuses_a_metric_without_sta(tiny):
    from taskarith_core.real.stability import streamed_stability

    with pytest.raises(InputError, match="no STA method"):
        with streamed_stability(tiny, tiny.tasks, "bogus", [1, 2], 0.5):
            pass


def test_streamed_stability_computes_each_importance_once(tiny, monkeypatch):
    """The mask IoUs and the merges of every Ns share one importance file per (task, Ns)."""
    from taskarith_core.analyses.stability import importance_stability
    from taskarith_core.models import importance as model_importance

    calls: list[tuple[str, int]] = []
    real = model_importance.cached_importance

    def counting(source, task, metric, samples, *args, **kwargs):
        calls.append((task, samples))
        return real(source, task, metric, samples, *args, **kwargs)

    monkeypatch.setattr(model_importance, "cached_importance", counting)
    importance_stability(tiny, "lp", (2, 4), p=0.6, seed=1, stream=True)
    assert sorted(calls) == sorted((t, n) for t in tiny.tasks for n in (2, 4))
