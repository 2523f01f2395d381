"""Executors: the local one, the journal behind --resume, and a real 2-CPU Ray instance (worker
killed mid-grid, resume, identical rows to the local executor on the zoo, bad clusters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from taskarith_core.errors import InputError
from taskarith_core.executor import (
    LOCAL,
    ExecutorSpec,
    Journal,
    open_executor,
    parse_executor,
    run_grid,
)

ROOT = Path(__file__).resolve().parents[1]


def test_parse_executor_forms_and_refusals(tmp_path):
    assert parse_executor("local") == ExecutorSpec()
    assert parse_executor("ray") == ExecutorSpec("ray")
    assert parse_executor("ray:auto").address == "auto"
    assert parse_executor("ray:10.0.0.5:6379").address == "10.0.0.5:6379"
    assert parse_executor("ray", str(tmp_path)).shared_dir == tmp_path
    for bad, words in (
        ("spark", "unknown executor"),
        ("ray:10.0.0.5", "not HOST:PORT"),
        ("ray:host:99999", "not HOST:PORT"),
    ):
        with pytest.raises(InputError, match=words):
            parse_executor(bad)
    with pytest.raises(InputError, match="not a folder"):
        parse_executor("ray", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="for the ray executor"):
        parse_executor("local", str(tmp_path))


def _square(context, item):
    calls = context["calls"]
    calls.append(item)
    return {"x": item, "y": item * item + context["offset"]}


def test_run_grid_local_order_progress_and_journal(tmp_path):
    journal = Journal(tmp_path / "j.jsonl", "run-a")
    seen = []
    ctx = {"calls": [], "offset": 1}
    out = run_grid(
        LOCAL,
        _square,
        ctx,
        [3, 1, 2],
        keys=["a", "b", "c"],
        journal=journal,
        progress=lambda d, t, m: seen.append((d, t, m)),
    )
    assert out == [{"x": 3, "y": 10}, {"x": 1, "y": 2}, {"x": 2, "y": 5}]
    assert [d for d, _, _ in seen] == [1, 2, 3] and seen[-1][1] == 3
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"run": "run-a"} and len(lines) == 4


def test_resume_skips_units_on_disk_and_ignores_a_torn_line(tmp_path):
    path = tmp_path / "j.jsonl"
    first = Journal(path, "run-a")
    first.record("a", {"x": 3, "y": -1})  # a value the unit would not give: proves it was reused
    with open(path, "a") as handle:
        handle.write('{"key": "b", "res')  # killed while writing
    ctx = {"calls": [], "offset": 1}
    out = run_grid(
        LOCAL, _square, ctx, [3, 1, 2], keys=["a", "b", "c"], journal=Journal(path, "run-a", True)
    )
    assert ctx["calls"] == [1, 2]
    assert out[0] == {"x": 3, "y": -1} and out[1] == {"x": 1, "y": 2}
    with pytest.raises(InputError, match="other settings"):
        Journal(path, "run-b", resume=True)
    Journal(path, "run-b").finish()
    assert not path.exists()


def test_run_grid_refuses_duplicate_keys():
    with pytest.raises(ValueError, match="unique key"):
        run_grid(LOCAL, _square, {}, [1, 2], keys=["a", "a"])


def test_unreachable_address_is_one_sentence_exit_2_nothing_written(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "taskarith_core", "analyse", "sweep", "--method", "ta"]
        + ["--values", "0.3", "--executor", "ray:127.0.0.1:9", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nobody answers at Ray address '127.0.0.1:9'" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_local():
    """One 2-CPU Ray instance for the module; the executor joins it instead of starting one."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _unit_dies_once(context, item):
    """Kills its own worker process the first time it runs item 1 (a lost worker)."""
    marks = Path(context["folder"])
    (marks / f"ran-{item}-{os.getpid()}").touch()
    if item == 1 and not (marks / "died").exists():
        (marks / "died").touch()
        os._exit(1)
    return {"item": item, "double": 2 * item}


@pytest.fixture()
def by_value():
    """Units defined in this test module travel to workers by value."""
    import ray.cloudpickle as cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_ray_retries_a_killed_worker_and_resumes(ray_local, by_value, tmp_path):
    ctx = {"folder": str(tmp_path)}
    journal = Journal(tmp_path / "j.jsonl", "run")
    with open_executor(ExecutorSpec("ray")) as executor:
        out = run_grid(
            executor, _unit_dies_once, ctx, [0, 1, 2, 3], keys=list("abcd"), journal=journal
        )
    assert out == [{"item": i, "double": 2 * i} for i in range(4)]
    assert (tmp_path / "died").exists() and len(list(tmp_path.glob("ran-1-*"))) == 2
    for mark in tmp_path.glob("ran-*"):
        mark.unlink()
    # resume: drop one unit from the journal; only that unit runs again
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    kept = [line for line in lines if '"key": "c"' not in line]
    (tmp_path / "j.jsonl").write_text("\n".join(kept) + "\n")
    with open_executor(ExecutorSpec("ray")) as executor:
        again = run_grid(
            executor,
            _unit_dies_once,
            ctx,
            [0, 1, 2, 3],
            keys=list("abcd"),
            journal=Journal(tmp_path / "j.jsonl", "run", resume=True),
        )
    assert again == out and [p.name.split("-")[1] for p in tmp_path.glob("ran-*")] == ["2"]


def test_gpu_source_on_a_cluster_without_gpus_is_refused(ray_local):
    with pytest.raises(InputError, match="no GPUs"):
        with open_executor(ExecutorSpec("ray"), gpu=True):
            pass


def test_cluster_without_the_package_is_refused(ray_local, monkeypatch):
    from taskarith_core import executor_ray

    monkeypatch.setattr(executor_ray, "_probe_package", lambda: False)
    with pytest.raises(InputError, match="cannot import this project"):
        with open_executor(ExecutorSpec("ray")):
            pass


_SWEEP = ["analyse", "sweep", "--method", "sta-amp", "--values", "0.3,0.7,0.9", "--device", "cpu"]
_SWEEP += ["--tasks", "digits,letters,shapes", "--max-samples", "32"]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> pd.DataFrame:
    from taskarith_core.cli import main

    out = tmp_path_factory.mktemp("local")
    assert main([*_SWEEP, "--out", str(out)]) == 0
    return pd.read_csv(out / "sweep.csv")


@pytest.mark.parametrize("shared", [False, True], ids=["object-store", "shared-dir"])
def test_zoo_sweep_on_ray_equals_local_row_for_row(ray_local, local_sweep, tmp_path, shared):
    from taskarith_core.cli import main

    extra = ["--shared-dir", str(tmp_path)] if shared else []
    assert main([*_SWEEP, "--executor", "ray", *extra, "--out", str(tmp_path / "ray")]) == 0
    remote = pd.read_csv(tmp_path / "ray" / "sweep.csv")
    pd.testing.assert_frame_equal(local_sweep, remote, check_exact=True)
    assert len(remote) == 3 * 4 and not list((tmp_path / "ray").glob(".*.jsonl"))
    assert bool(list(tmp_path.glob("shared-*.safetensors"))) == shared


def _cli_in(cache: Path, monkeypatch, *argv: str) -> int:
    """The CLI with its own result cache (so a second run computes instead of reading)."""
    from taskarith_core.cli import main

    monkeypatch.setenv("TASKARITH_CACHE", str(cache))
    return main([*argv, "--device", "cpu"])


def test_xi_rows_on_ray_equal_the_threaded_local_grid(ray_local, tmp_path, monkeypatch):
    xi = ["analyse", "xi", "--tasks", "digits,letters", "--points", "3", "--samples", "16"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert _cli_in(tmp_path / "c1", monkeypatch, *xi, "--workers", "2", "--out", str(local)) == 0
    assert (
        _cli_in(tmp_path / "c2", monkeypatch, *xi, "--executor", "ray", "--out", str(remote)) == 0
    )
    a, b = pd.read_csv(local / "xi.csv"), pd.read_csv(remote / "xi.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(b) == 9 and not list(remote.glob(".*.jsonl"))


def test_negation_sweep_on_ray_equals_local(ray_local, tmp_path, monkeypatch):
    neg = ["analyse", "negation-sweep", "--method", "ta", "--values", "0.4,0.8"]
    neg += ["--tasks", "digits,shapes", "--max-samples", "32"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert _cli_in(tmp_path / "c", monkeypatch, *neg, "--out", str(local)) == 0
    assert (
        _cli_in(tmp_path / "c", monkeypatch, *neg, "--executor", "ray", "--out", str(remote)) == 0
    )
    a = pd.read_csv(local / "negation_sweep.csv")
    b = pd.read_csv(remote / "negation_sweep.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(b["task"]) == ["digits", "digits", "shapes", "shapes"]


def test_cli_resume_continues_an_interrupted_sweep(tmp_path, monkeypatch):
    """A sweep killed after its first value: --resume computes only the values not on disk."""
    import taskarith_core.analyses.sweeps as sweeps

    sweep = ["analyse", "sweep", "--method", "ta", "--values", "0.2,0.5", "--max-samples", "16"]
    sweep += ["--tasks", "digits,letters", "--out", str(tmp_path / "out")]
    real, merged = sweeps._sweep_point, []

    def dies_after_one(ctx, value):
        if merged:
            raise KeyboardInterrupt
        merged.append(value)
        return real(ctx, value)

    monkeypatch.setattr(sweeps, "_sweep_point", dies_after_one)
    assert _cli_in(tmp_path / "c", monkeypatch, *sweep) != 0  # interrupted
    journal = tmp_path / "out" / ".sweep.rows.jsonl"
    assert journal.is_file() and not (tmp_path / "out" / "sweep.csv").exists()
    merged.clear()
    monkeypatch.setattr(sweeps, "_sweep_point", lambda ctx, v: merged.append(v) or real(ctx, v))
    assert _cli_in(tmp_path / "c", monkeypatch, *sweep, "--resume") == 0
    assert merged == [0.5] and not journal.exists()
    frame = pd.read_csv(tmp_path / "out" / "sweep.csv")
    assert sorted(set(frame["value"])) == [0.2, 0.5]


def test_reproduce_on_ray_equals_local(ray_local, tmp_path, monkeypatch):
    rep = ["reproduce", "--source", "zoo:full", "--protocol", "addition", "--methods", "ta"]
    rep += ["--tasks", "digits,letters", "--max-samples", "16"]
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert _cli_in(tmp_path / "c", monkeypatch, *rep, "--out", str(local)) == 0
    assert (
        _cli_in(tmp_path / "c", monkeypatch, *rep, "--executor", "ray", "--out", str(remote)) == 0
    )
    a, b = pd.read_csv(local), pd.read_csv(remote)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert not list(tmp_path.glob(".*.jsonl"))


def test_scaling_on_ray_equals_local(ray_local, tmp_path, monkeypatch):
    scaling = ["analyse", "scaling", "--methods", "ta=0.3,sta-amp=0.7", "--counts", "2,3"]
    scaling += ["--tasks", "digits,letters,shapes", "--subsets", "2", "--max-samples", "16"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert _cli_in(tmp_path / "c", monkeypatch, *scaling, "--out", str(local)) == 0
    assert (
        _cli_in(tmp_path / "c", monkeypatch, *scaling, "--executor", "ray", "--out", str(remote))
        == 0
    )
    a, b = pd.read_csv(local / "scaling.csv"), pd.read_csv(remote / "scaling.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(b) == 2 * 3


def test_stability_on_ray_equals_local(ray_local, tmp_path, monkeypatch):
    stab = ["analyse", "stability", "--metric", "amp", "--ns-values", "4,8"]
    stab += ["--tasks", "digits,letters", "--max-samples", "16"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert _cli_in(tmp_path / "c", monkeypatch, *stab, "--out", str(local)) == 0
    assert (
        _cli_in(tmp_path / "c", monkeypatch, *stab, "--executor", "ray", "--out", str(remote)) == 0
    )
    a, b = pd.read_csv(local / "stability.csv"), pd.read_csv(remote / "stability.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_run_config_on_ray_prints_the_local_table(ray_local, tmp_path, monkeypatch):
    from taskarith_core.service.sources import explorer_for
    from taskarith_core.ui import merge_tab
    from taskarith_core.ui.common import config_from_source

    source = {"source": "zoo", "paradigm": "full", "device": "cpu"}
    tasks = explorer_for(config_from_source(source)).tasks[:3]
    values = merge_tab.param_values("task_arithmetic", {"lam": 0.3, "p": 0.5})
    cfg = merge_tab.merge_config(source, tasks, "task_arithmetic", "lp", 8, 0, 0, "test", *values)
    config = tmp_path / "run.json"
    config.write_text(cfg.to_json())
    run = ["run", "--config", str(config), "--no-references"]
    assert _cli_in(tmp_path / "c", monkeypatch, *run, "--out", str(tmp_path / "local.csv")) == 0
    ray_run = [*run, "--executor", "ray", "--out", str(tmp_path / "ray.csv")]
    assert _cli_in(tmp_path / "c", monkeypatch, *ray_run) == 0
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "ray.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(b) == 3


def test_page_started_with_ray_runs_its_sweep_on_the_cluster(ray_local, monkeypatch):
    from taskarith_core import executor
    from taskarith_core.executor_ray import RayExecutor
    from taskarith_core.ui.analyses_tab import _sweep
    from taskarith_core.ui.common import config_from_source, explorer

    service = explorer(config_from_source({"source": "zoo", "paradigm": "full", "device": "cpu"}))
    tasks = ["digits", "letters"]
    local = _sweep(service, tasks, None, "ta", 16, 8, lambda *a: None)
    monkeypatch.setitem(executor._PAGE, "executor", executor.LOCAL)
    seen = []
    on_ray = executor.use_for_page(ExecutorSpec("ray"))
    assert isinstance(executor.page_executor(), RayExecutor) and on_ray is executor.page_executor()
    remote = _sweep(service, tasks, None, "ta", 16, 8, lambda *a: seen.append(a))
    pd.testing.assert_frame_equal(local, remote, check_exact=True)
    assert [done for done, _, _ in seen][-1] == len(set(remote["value"]))


def test_page_with_an_unreachable_ray_address_exits_2(tmp_path):
    run = subprocess.run(
        [sys.executable, "app.py", "--ray", "127.0.0.1:9", "--port", "7999"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nobody answers at Ray address" in lines[0]
