"""``importance`` and ``evaluate`` commands on the tiny source (zoo opening is monkeypatched)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from taskarith_core.cli import main, model_cmds
from taskarith_core.io import load_state_dict, open_safetensors, save_state_dict
from taskarith_core.models.importance import lp_importance
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny"), n_tasks=2)


@pytest.fixture
def cli(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(model_cmds, "open_model_source", lambda args: tiny)
    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path / "cache"))
    return lambda *argv: main([str(a) for a in argv])


def test_importance_writes_lp_of_the_given_model(cli, tiny, tmp_path):
    out = tmp_path / "I.safetensors"
    model = tiny.finetuned_path("task1")
    assert (
        cli(
            "importance",
            "--metric",
            "lp",
            "--model",
            model,
            "--task",
            "task1",
            "--samples",
            4,
            "--out",
            out,
        )
        == 0
    )
    got = load_state_dict(out)
    expected = lp_importance(tiny, "task1", tiny.load_finetuned("task1"), samples=4)
    torch.testing.assert_close(got, expected)
    with open_safetensors(out) as handle:
        assert handle.metadata()["metric"] == "lp"


def test_importance_fisher_defaults_to_pretrained(cli, tmp_path):
    out = tmp_path / "F.safetensors"
    assert (
        cli("importance", "--metric", "fisher", "--task", "task0", "--samples", 3, "--out", out)
        == 0
    )
    assert all(bool((v >= 0).all()) for v in load_state_dict(out).values())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "task0", "--samples", "0"], "argument --samples: samples=0 is less than 1"),
        (["--task", "task0", "--samples", "10001"], "more than the limit 10000"),
        (["--task", "nope"], "unknown task 'nope'"),
    ],
)
def test_importance_bad_input_one_line_nothing_written(cli, tmp_path, capsys, argv, message):
    out = tmp_path / "I.safetensors"
    assert cli("importance", "--metric", "lp", "--out", out, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()


def test_checkpoint_of_other_shape_names_key_and_shapes(cli, tiny, tmp_path, capsys):
    bad = tiny.load_finetuned("task0")
    bad["visual.positional_embedding"] = torch.zeros(9, 32)
    model = save_state_dict(bad, tmp_path / "other.safetensors")
    out = tmp_path / "I.safetensors"
    assert (
        cli("importance", "--metric", "lp", "--model", model, "--task", "task0", "--out", out) == 2
    )
    err = capsys.readouterr().err
    assert "visual.positional_embedding" in err and "(9, 32)" in err and "(5, 32)" in err
    assert not out.exists()
    assert cli("evaluate", "--model", model) == 2
    assert "(9, 32)" in capsys.readouterr().err


def test_evaluate_prints_table_and_writes_csv(cli, tiny, tmp_path, capsys):
    out = tmp_path / "acc.csv"
    model = tiny.finetuned_path("task0")
    assert cli("evaluate", "--model", model, "--tasks", "all", "--normalised", "--out", out) == 0
    frame = pd.read_csv(out)
    assert list(frame["task"]) == ["task0", "task1"]
    assert frame.loc[0, "accuracy"] == 1.0 and frame.loc[0, "normalised"] == 1.0
    printed = capsys.readouterr().out
    assert "task1" in printed and "mean" in printed
    assert "95% interval: accuracy [" in printed and "normalised [" in printed


def test_evaluate_unknown_task_and_source(cli, tiny, capsys, monkeypatch):
    model = tiny.finetuned_path("task0")
    assert cli("evaluate", "--model", model, "--tasks", "task0,bogus") == 2
    assert "unknown task 'bogus'" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["evaluate", "--model", str(model), "--source", "hub:x"]) == 2
    assert "--source 'hub:x'" in capsys.readouterr().err
