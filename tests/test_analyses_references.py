"""A merge run's references on the tiny source: the right models, the same images, cached."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from taskarith_core.analyses import references as refs_mod
from taskarith_core.analyses.references import references_table, run_references
from taskarith_core.analyses.sweeps import LAMBDA_GRID
from taskarith_core.fusion import merge
from taskarith_core.models import evaluation
from taskarith_core.service.sources import clear_explorers, explorer_for, register_source
from taskarith_core.ui import merge_tab
from taskarith_core.ui.common import config_from_source
from tests.tiny_source import TINY_SPLIT_SIZES, make_tiny_source

TASKS = ["task0", "task1", "task2"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_refs")
    settings = {"source": "zoo", "paradigm": "full", "zoo_root": str(root), "device": "cpu"}
    register_source(config_from_source(settings), make_tiny_source(root, n_tasks=3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKARITH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield settings
    clear_explorers()


def _cfg(base, method="sta", importance="lp", **params):
    values = merge_tab.param_values(method, {"p": 0.5} if method == "sta" else params)
    return merge_tab.merge_config(base, TASKS, method, importance, 8, 0, 0, "test", *values)


def _hits(service, state, split="test"):
    frame = evaluation.evaluate_states(
        service.source, {"m": state}, TASKS, split=split, keep_correct=True
    )
    return evaluation.correctness(frame)["m"]


def test_sta_run_has_every_reference_on_the_same_images(base):
    cfg = _cfg(base)
    service = explorer_for(cfg)
    got = run_references(service, cfg)
    assert set(got.references) == {"zeroshot", "finetuned", "task_arithmetic", "random"}
    for correct in [got.run, *got.references.values()]:
        assert list(correct) == TASKS
        assert all(len(v) == TINY_SPLIT_SIZES["test"] for v in correct.values())
    # task arithmetic at the lambda chosen on val, evaluated on test
    lam = float(got.notes["task_arithmetic"].split()[1])
    assert lam in LAMBDA_GRID
    fts = [service.finetuned(t) for t in TASKS]
    expected = _hits(service, merge("task_arithmetic", service.pretrained(), fts, lam=lam))
    assert all(torch.equal(got.references["task_arithmetic"][t], expected[t]) for t in TASKS)
    # random control: the run's settings with random importance, mean over seeds 0, 1, 2
    random = _cfg(base, importance="random")
    seeds = [_hits(service, service.merged_state(replace(random, seed=s))) for s in (0, 1, 2)]
    mean = {t: sum(s[t].double() for s in seeds) / 3 for t in TASKS}
    assert all(torch.allclose(torch.as_tensor(got.references["random"][t]), mean[t]) for t in TASKS)
    assert len(got.seed_means) == 3


def test_references_are_reused_from_disk(base, monkeypatch):
    cfg = _cfg(base, importance="amp")
    run_references(explorer_for(cfg), cfg)
    clear_explorers()  # a restarted page: memory is empty, the disk cache is not
    register_source(config_from_source(base), make_tiny_source(cfg.zoo_root, n_tasks=3))
    calls = []
    real = evaluation.evaluate_states
    monkeypatch.setattr(
        evaluation, "evaluate_states", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    run_references(explorer_for(cfg), cfg)
    assert len(calls) == 1  # only the run itself; every reference came from the disk


def test_table_compares_the_run_with_each_reference(base):
    cfg = _cfg(base, method="task_arithmetic")
    got = run_references(explorer_for(cfg), cfg)
    table = references_table(got)
    assert table["model"].tolist() == [
        "this run",
        "zero-shot",
        "fine-tuned (each on its task)",
        "task arithmetic, lambda chosen on val",
    ]  # no random-importance control for a method without importance
    assert (
        table["verdict: run better?"].iloc[1:].isin(["holds", "does not hold", "cannot tell"]).all()
    )
    finetuned = table.set_index("model").loc["fine-tuned (each on its task)"]
    assert finetuned["mean normalised"] == 100.0  # the tiny theta_t fit their own labels
    assert refs_mod.LABELS["random"].startswith("same method")
