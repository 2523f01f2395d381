"""``python -m taskarith_core analyse ...`` on the tiny source: files, summary, bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from taskarith_core.cli import analyse_cmds, main
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny"), n_tasks=3)


@pytest.fixture(scope="module")
def tiny_talos(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_talos"), n_tasks=3, paradigm="talos")


@pytest.fixture()
def cli(tiny, tiny_talos, monkeypatch, tmp_path):
    sources = {"full": tiny, "talos": tiny_talos}
    monkeypatch.setattr(analyse_cmds, "open_source", lambda args: sources[args.paradigm])
    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path / "cache"))

    def run(*argv: str) -> int:
        return main(["analyse", *argv, "--device", "cpu"])

    return run


def test_xi_writes_csv_html_and_prints_summary(cli, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli(
        "xi", "--tasks", "task0,task1", "--points", "3", "--samples", "16", "--out", str(out)
    )
    assert code == 0
    grid = pd.read_csv(out / "xi.csv")
    assert len(grid) == 9 and set(grid["alpha1"]) == {-2.0, 0.0, 2.0}
    assert (out / "xi_summary.csv").is_file()
    html = (out / "xi.html").read_text()
    assert "plotly" in html.lower() and "xi, task0 + task1" in html
    printed = capsys.readouterr().out
    assert "mean_xi" in printed and "xi.csv" in printed


def test_cosine_iou_rates_localisation(cli, tmp_path):
    for name, extra in (
        ("cosine", ["--by", "kind"]),
        ("iou", ["--masks", "sta", "--metric", "amp", "--p", "0.5"]),
        ("rates", ["--masks", "talos", "--paradigm", "talos"]),
        ("localisation", ["--max-samples", "16"]),
    ):
        out = tmp_path / name
        assert cli(name, *extra, "--out", str(out)) == 0, name
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.html").is_file()
    rates = pd.read_csv(tmp_path / "rates" / "rates.csv")
    assert rates["rate"].between(0, 1).all() and set(rates["task"]) == {"task0", "task1", "task2"}
    loc = pd.read_csv(tmp_path / "localisation" / "localisation.csv")
    assert len(loc) == 9 and {"ratio_finetuned", "ratio_zeroshot"} <= set(loc.columns)


def test_sweep_and_negation_sweep(cli, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli("sweep", "--method", "ta", "--values", "0.2,0.6", "--out", str(out)) == 0
    sweep = pd.read_csv(out / "sweep.csv")
    assert set(sweep["value"]) == {0.2, 0.6} and "mean" in set(sweep["task"])
    out = tmp_path / "neg"
    assert cli("negation-sweep", "--method", "ta", "--values", "0.5", "--out", str(out)) == 0
    neg = pd.read_csv(out / "negation_sweep.csv")
    assert {"target_accuracy", "control_accuracy", "best", "keeps_control"} <= set(neg.columns)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["xi", "--tasks", "task0,task1", "--points", "0"], "less than 1"),
        (["xi", "--tasks", "task0,task1", "--alpha-range", "2", "-2"], "LO < HI"),
        (["xi", "--tasks", "task0,nope"], "unknown task"),
        (["xi", "--tasks", "task0"], "exactly two"),
        (["iou", "--masks", "talos"], "no TaLoS mask"),
        (["sweep", "--method", "magic"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    assert cli(*argv, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["iou", "--masks", "fisher", "--sparsity", "1.5"], "sparsity=1.5 is outside [0, 1)"),
        (["xi", "--threshold", "nan"], "threshold must be a finite number"),
        (["localisation", "--coefficient", "nan"], "coefficient must be a finite number"),
        (["localisation", "--coefficient", "inf"], "coefficient must be a finite number"),
        (["localisation", "--seed", "7"], "--seed only changes masks"),
        (["cosine", "--ns", "8"], "--ns only changes masks"),
        (["scaling", "--methods", "ta=abc"], "ta='abc' is not a number"),
        (["scaling", "--methods", "ta"], "write NAME=VALUE"),
        (["xi", "--points", "5000"], "more than the limit 50"),
        (["xi", "--points", "100000"], "more than the limit 50"),
        (["xi", "--max-samples", "10"], "unrecognized arguments: --max-samples"),
        (["sweep", "--method", "ta", "--values", ",".join(["0.1"] * 101)], "more than the limit"),
        (["sweep", "--method", "sta-lp", "--values", "0.5,1.5"], "p=1.5 is outside [0, 1]"),
        (["sweep", "--method", "ta", "--param", "zz"], "ta has no such parameter"),
        (["negation-sweep", "--method", "ties"], "ties has no negation"),
        (["stability", "--ns-values", "8,0"], "less than 1"),
        (["kernel", "--max-samples", "0"], "less than 1"),
        (["kernel", "--seed", "-1"], "less than 0"),
        (["kernel", "--threads", "100000"], "more than the limit"),
    ],
)
def test_values_are_refused_before_the_source_is_opened(
    monkeypatch, tmp_path, capsys, argv, message
):
    def never(args):
        raise AssertionError("the source was opened")

    monkeypatch.setattr(analyse_cmds, "open_source", never)
    out = tmp_path / "bad"
    assert main(["analyse", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()


def test_missing_out_folders_are_created_and_a_file_on_the_way_is_refused(cli, tmp_path, capsys):
    assert cli("cosine", "--out", str(tmp_path / "no" / "such")) == 0
    assert (tmp_path / "no" / "such" / "cosine.csv").is_file()
    (tmp_path / "file").write_text("x")
    assert cli("cosine", "--out", str(tmp_path / "file" / "sub")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_xi_with_checkpoints_of_another_pretrained_model_is_refused(
    cli, tiny, tmp_path_factory, tmp_path, capsys
):
    other = make_tiny_source(tmp_path_factory.mktemp("other"), n_tasks=2, seed=7)
    files = ",".join(str(other.finetuned_path(t)) for t in other.tasks)
    out = tmp_path / "xi"
    assert cli("xi", "--tasks", "task0,task1", "--finetuned", files, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "not fine-tuned from this pretrained model" in err and not out.exists()
    own = ",".join(str(tiny.finetuned_path(t)) for t in ("task0", "task1"))
    argv = ["--tasks", "task0,task1", "--points", "2", "--samples", "8", "--out", str(out)]
    assert cli("xi", "--finetuned", own, *argv) == 0
    assert cli("xi", "--finetuned", own.split(",")[0], *argv) == 2
    assert "two checkpoints" in capsys.readouterr().err


def test_kernel_overlays_paradigms(cli, tmp_path):
    out = tmp_path / "kernel"
    assert cli("kernel", "--paradigms", "full,talos", "--max-samples", "8", "--out", str(out)) == 0
    frame = pd.read_csv(out / "kernel.csv")
    assert list(dict.fromkeys(frame["label"])) == ["tiny/full", "tiny/talos"]


def test_stability_writes_both_tables(cli, tmp_path, capsys):
    out = tmp_path / "stab"
    argv = ["--metric", "random", "--ns-values", "1,2", "--tasks", "task0,task1", "--out", str(out)]
    assert cli("stability", *argv) == 0
    assert {p.name for p in out.iterdir()} == {
        "stability.csv",
        "stability_iou.csv",
        "stability.html",
        "stability_iou.html",
    }
    assert "mask IoU between Ns" in capsys.readouterr().out
