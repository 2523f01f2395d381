"""Evaluation on the tiny source: accuracies against a manual computation, caching, bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from taskarith_core.errors import InputError
from taskarith_core.models.evaluation import (
    add_normalised,
    batched_logits,
    correctness,
    evaluate_states,
    reference_accuracies,
    reference_correct,
    shared_visual,
    split_tensors,
)
from tests.tiny_source import TINY_SPLIT_SIZES, make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny"), n_tasks=2)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path / "cache"))


def _manual_accuracy(source, state, task):
    visual = source.build_visual()
    visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items()})
    images, labels = source.dataset(task, "test").tensors
    with torch.no_grad():
        logits = F.normalize(visual(images), dim=-1) @ source.head(task).T
    return float((logits.argmax(1) == labels).float().mean())


def test_evaluate_states_matches_manual_accuracy(tiny):
    pre = tiny.load_pretrained()
    ft = tiny.load_finetuned("task1")
    mix = {k: 0.5 * (pre[k] + ft[k]) for k in pre}
    frame = evaluate_states(tiny, {"pre": pre, "mix": mix}, tasks=["task0", "task1", "control"])
    assert list(frame.columns) == ["model", "task", "split", "accuracy"]
    assert len(frame) == 6
    for row in frame.itertuples():
        state = pre if row.model == "pre" else mix
        assert row.accuracy == pytest.approx(_manual_accuracy(tiny, state, row.task))


def test_reference_accuracies_finetuned_perfect_zeroshot_not(tiny):
    ref = reference_accuracies(tiny)
    assert list(ref["task"]) == ["task0", "task1"]
    assert (ref["finetuned"] == 1.0).all()  # labels are theta_t's own predictions
    assert (ref["zeroshot"] < 0.9).all()
    ref.loc[0, "zeroshot"] = -1.0  # callers get a copy, the cache stays intact
    assert reference_accuracies(tiny)["zeroshot"].iloc[0] >= 0


def test_add_normalised_divides_by_finetuned():
    frame = pd.DataFrame(
        {"model": "m", "task": ["a", "b"], "split": "test", "accuracy": [0.5, 0.3]}
    )
    ref = pd.DataFrame({"task": ["b", "a"], "zeroshot": [0.1, 0.2], "finetuned": [0.6, 1.0]})
    out = add_normalised(frame, ref)
    assert out["normalised"].tolist() == pytest.approx([0.5, 0.5])
    assert "normalised" not in frame


def test_split_tensors_subset_is_seeded_and_cached(tiny):
    a, la = split_tensors(tiny, "task0", "val", max_samples=10, seed=3)
    b, _ = split_tensors(tiny, "task0", "val", max_samples=10, seed=3)
    c, _ = split_tensors(tiny, "task0", "val", max_samples=10, seed=4)
    assert a.shape == (10, 3, 16, 16) and la.dtype == torch.int64
    assert a is b
    assert not torch.equal(a, c)
    with pytest.warns(UserWarning, match="fewer than max_samples"):
        full, _ = split_tensors(tiny, "task0", "val", max_samples=1000)
    assert len(full) == TINY_SPLIT_SIZES["val"]


def test_batched_logits_independent_of_batch_size(tiny):
    images, _ = split_tensors(tiny, "task0", "test")
    visual, head = shared_visual(tiny), tiny.head("task0")
    torch.testing.assert_close(
        batched_logits(visual, images, head, batch_size=7),
        batched_logits(visual, images, head, batch_size=512),
    )


def test_bad_inputs_raise_input_error(tiny):
    pre = tiny.load_pretrained()
    with pytest.raises(InputError, match="unknown task 'nope'"):
        evaluate_states(tiny, {"pre": pre}, tasks=["nope"])
    with pytest.raises(InputError, match="unknown split"):
        evaluate_states(tiny, {"pre": pre}, split="dev")
    bad = dict(pre)
    bad["visual.proj"] = torch.zeros(32, 8)
    with pytest.raises(InputError, match=r"visual.proj' has shape \(32, 8\).*\(32, 16\)"):
        evaluate_states(tiny, {"bad": bad})
    with pytest.raises(InputError, match="max_samples=0"):
        split_tensors(tiny, "task0", "test", max_samples=0)


def test_progress_reports_every_model_task_pair(tiny):
    calls = []
    evaluate_states(tiny, {"pre": tiny.load_pretrained()}, progress=lambda d, t, m: calls.append(d))
    assert calls == [1, 2]


class _ListDataset(torch.utils.data.Dataset):
    """A dataset that is not a TensorDataset, like a folder of image files."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        x, y = self.inner[i]
        return x, int(y)


def test_large_splits_stream_instead_of_caching(tiny, monkeypatch):
    from taskarith_core.models.files import FileSource

    streamed = FileSource(
        name="streamed",
        arch=tiny.arch,
        pretrained=tiny.pretrained_path(),
        finetuned={t: tiny.finetuned_path(t) for t in tiny.tasks},
        classnames={t: tiny.classnames(t) for t in tiny.tasks},
        data=lambda task, split: _ListDataset(tiny.dataset(task, split)),
        heads={t: tiny.head(t) for t in tiny.tasks},
    )
    monkeypatch.setenv("TASKARITH_DATA_CACHE_MB", "0.01")
    state = {"ft": tiny.load_finetuned("task0")}
    frame = evaluate_states(streamed, state, batch_size=5, max_samples=40)
    from taskarith_core.models.evaluation import _cache

    assert not _cache(streamed).data  # nothing kept in memory
    monkeypatch.setenv("TASKARITH_DATA_CACHE_MB", "100")
    cached = evaluate_states(streamed, state, batch_size=5, max_samples=40)
    assert _cache(streamed).data
    pd.testing.assert_frame_equal(frame, cached)
    assert frame["accuracy"].iloc[0] == 1.0


def test_reference_accuracies_reuse_the_disk_cache(tmp_path, monkeypatch):
    from taskarith_core.models import evaluation

    first = make_tiny_source(tmp_path / "a", n_tasks=2, seed=3)
    ref = reference_accuracies(first, max_samples=20)
    assert list((tmp_path / "cache" / "reference").glob("*.csv"))
    second = make_tiny_source(tmp_path / "b", n_tasks=2, seed=3)  # same files, new object

    def boom(*args, **kwargs):
        raise AssertionError("evaluated although cached on disk")

    monkeypatch.setattr(evaluation, "evaluate_states", boom)
    pd.testing.assert_frame_equal(reference_accuracies(second, max_samples=20), ref)
    with pytest.raises(AssertionError, match="evaluated"):
        reference_accuracies(second, max_samples=21)
    other = make_tiny_source(tmp_path / "c", n_tasks=2, seed=4)  # other weights: other key
    with pytest.raises(AssertionError, match="evaluated"):
        reference_accuracies(other, max_samples=20)


def test_concurrent_evaluations_do_not_mix_weights(tiny):
    from concurrent.futures import ThreadPoolExecutor

    states = {t: tiny.load_finetuned(t) for t in tiny.tasks}
    expected = {t: evaluate_states(tiny, {t: s})["accuracy"].tolist() for t, s in states.items()}
    with ThreadPoolExecutor(4) as pool:
        jobs = [(t, pool.submit(evaluate_states, tiny, {t: states[t]})) for t in tiny.tasks * 4]
        for task, job in jobs:
            assert job.result()["accuracy"].tolist() == expected[task]


def test_per_image_correctness_averages_to_accuracy(tiny):
    pre = tiny.load_pretrained()
    frame = evaluate_states(tiny, {"pre": pre}, tasks=["task0", "task1"], keep_correct=True)
    hits = correctness(frame)["pre"]
    for row in frame.itertuples():
        assert hits[row.task].dtype == torch.bool
        assert len(hits[row.task]) == TINY_SPLIT_SIZES["test"]
        assert float(hits[row.task].float().mean()) == pytest.approx(row.accuracy)
    with pytest.raises(InputError, match="keep_correct"):
        correctness(evaluate_states(tiny, {"pre": pre}, tasks=["task0"]))


def test_reference_correctness_cached_on_disk_and_matches_table(tmp_path, monkeypatch):
    from taskarith_core.models import evaluation

    first = make_tiny_source(tmp_path / "a", n_tasks=2, seed=3)
    refs = reference_correct(first, max_samples=20)
    table = reference_accuracies(first, max_samples=20)
    for kind in ("zeroshot", "finetuned"):
        got = [float(refs[kind][t].float().mean()) for t in table["task"]]
        assert got == pytest.approx(table[kind].tolist())
    monkeypatch.setattr(evaluation, "evaluate_states", lambda *a, **k: 1 / 0)
    again = reference_correct(make_tiny_source(tmp_path / "b", n_tasks=2, seed=3), max_samples=20)
    for kind in refs:
        for task in refs[kind]:
            assert torch.equal(again[kind][task], refs[kind][task])
