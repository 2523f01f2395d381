"""``python -m taskarith_core run --config`` reproduces the page's numbers exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from taskarith_core.cli import main
from taskarith_core.service.results import percent_table
from taskarith_core.ui import forget_tab, merge_tab

REPO = Path(__file__).resolve().parents[1]


def _source(root: Path) -> dict:
    return {"source": "zoo", "paradigm": "full", "zoo_root": str(root), "device": "cpu"}


def _page_table(source: dict, method: str, lam: float, p: float) -> tuple:
    from taskarith_core.service.sources import explorer_for
    from taskarith_core.ui.common import config_from_source

    tasks = explorer_for(config_from_source(source)).tasks
    values = merge_tab.param_values(method, {"lam": lam, "p": p})
    cfg = merge_tab.merge_config(source, tasks, method, "lp", 8, 0, 0, "test", *values)
    table, _, mean_text, *_ = merge_tab.run_merge(cfg, [])
    return cfg, percent_table(table).assign(mean_text=mean_text)


def test_cli_run_in_a_fresh_process_prints_the_page_numbers(mini_zoo_root, tmp_path):
    cfg, shown = _page_table(_source(mini_zoo_root), "task_arithmetic", 0.45, 0.5)
    config = tmp_path / "run.json"
    config.write_text(cfg.to_json())
    out = tmp_path / "cli.csv"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "taskarith_core", "run", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    cli = pd.read_csv(out)
    assert cli["task"].tolist() == shown["task"].tolist()
    for column in ("zeroshot", "finetuned", "merged", "normalised"):
        assert cli[column].tolist() == shown[column].tolist()
    # the page's mean sentence and the CLI's mean line print the same digits (a mean of the
    # unrounded accuracies, rounded once; a mean of the rounded column can differ by 0.01)
    page_mean = shown["mean_text"].iloc[0].split("Mean merged accuracy ")[1].split("%")[0]
    assert f"mean merged {page_mean} " in done.stdout


def test_cli_run_in_process_for_sta_and_forgetting(mini_zoo_root, tmp_path, capsys):
    source = _source(mini_zoo_root)
    cfg, shown = _page_table(source, "sta", 0.3, 0.6)
    config = tmp_path / "sta.json"
    config.write_text(cfg.to_json())
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "sta.csv")]) == 0
    cli = pd.read_csv(tmp_path / "sta.csv")
    assert cli["merged"].tolist() == shown["merged"].tolist()
    printed = capsys.readouterr().out
    assert "95% intervals: merged [" in printed
    for reference in ("zero-shot", "task arithmetic, lambda chosen on val", "random importance"):
        assert reference in printed
    forget = forget_tab.forget_config(
        source, cfg.tasks[0], "task_arithmetic", "lp", 0.8, 0.9, 8, 0, 0
    )
    page, _ = forget_tab.run_forget(forget)
    config.write_text(forget.to_json())
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "neg.csv")]) == 0
    cli = pd.read_csv(tmp_path / "neg.csv")
    assert cli["after"].tolist() == (page["after"] * 100).round(2).tolist()


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text('{"p": 3}')
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: p is outside [0, 1]") and "\n" not in err
    assert main(["run", "--config", str(tmp_path / "missing.json")]) == 2
    missing_zoo = tmp_path / "nozoo.json"
    missing_zoo.write_text('{"zoo_root": "%s", "tasks": []}' % (tmp_path / "nowhere"))
    assert main(["run", "--config", str(missing_zoo), "--out", str(tmp_path / "o.csv")]) == 2
    assert "zoo build" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


@pytest.fixture(autouse=True)
def _fresh_explorers(tmp_path, monkeypatch):
    from taskarith_core.service.sources import clear_explorers

    monkeypatch.setenv("TASKARITH_CACHE", str(tmp_path / "cache"))  # the CLI child inherits it
    clear_explorers()
    yield
    clear_explorers()
