"""Latency of the page, measured through the page's own callback functions.

    python benchmarks/app_latency.py [--zoo-root DIR] [--paradigm full] [--threads N]

    python benchmarks/app_latency.py --loaded   # the same beside a second CPU-bound process

Prints, against the README's targets (embedded zoo, 2 CPU cores): cold start of ``python app.py``
to a served page (< 5 s); the start-up warm-up, then the first STA run after it (< 3 s) and the
first run with its references; merge + evaluate (< 3 s); a slider drag on the Masks tab to its
one redraw (< 1 s); a 15 x 15 xi grid with 256 samples per task (< 15 s) and two paradigms side
by side (< 30 s). Wall and CPU seconds are both printed: on a shared machine wall time grows with
the load, CPU time does not. Caches on disk go to a fresh temporary folder, so nothing is read
from an earlier run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


CPU_SECONDS: dict[str, float] = {}  # CPU time of the last timed call (load-independent)


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    """Wall seconds of one call; its CPU seconds go to CPU_SECONDS["last"]."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU_SECONDS["last"] = time.process_time() - cpu
    return time.perf_counter() - start, out


def _row(
    name: str, seconds: float, target: float, note: str = "", cpu: float | None = None
) -> None:
    """One result line. On a shared machine wall time grows with the load; CPU time does not."""
    verdict = "ok" if seconds < target else "OVER"
    if target == float("inf"):
        verdict, target_text = "", "no target"
    else:
        target_text = f"target < {target:>4.0f} s"
    cpu_text = f"cpu {cpu:7.3f} s" if cpu is not None else " " * 13
    line = f"{name:<56} wall {seconds:8.3f} s  {cpu_text}  {target_text}  {verdict}"
    print(f"{line}  {note}")


def _proc_cpu(pid: int) -> float:
    """utime + stime of a running process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_start(args: argparse.Namespace) -> tuple[float, float]:
    """Wall and CPU seconds from starting ``python app.py`` to an HTTP 200 on its page."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    extra = ["--zoo-root", args.zoo_root] if args.zoo_root else []
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "app.py",
            "--port",
            str(port),
            "--paradigm",
            args.paradigm,
            *extra,
            "--threads",
            str(args.threads),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - start < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start, _proc_cpu(proc.pid)
            except OSError:
                time.sleep(0.05)
        return float("inf"), float("nan")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _median_of(call, values) -> tuple[list[float], float]:
    """Wall seconds of ``call(v)`` for each value, and the median CPU seconds."""
    walls, cpus = [], []
    for value in values:
        walls.append(_timed(call, value)[0])
        cpus.append(CPU_SECONDS["last"])
    return walls, statistics.median(cpus)


def page_latencies(args: argparse.Namespace) -> None:
    import torch

    from taskarith_core.ui.common import config_from_source, explorer

    if args.threads:
        torch.set_num_threads(args.threads)
    source = {"source": "zoo", "paradigm": args.paradigm, "zoo_root": args.zoo_root}
    first, service = _timed(explorer, config_from_source(source))
    tasks = service.tasks
    print(f"source {service.source.name}: {len(tasks)} tasks; opened in {first:.2f} s")
    merge_latencies(source, tasks)
    mask_latencies(source, tasks)
    xi_latency(source, tasks, args.paradigm)


def merge_latencies(source: dict, tasks: list[str]) -> None:
    """Merge + evaluate through the Merge tab's ``run_merge``: the first Run after the app's
    start-up warm-up (and that warm-up itself), then with references, then new lambda / p."""
    from taskarith_core.ui import merge_tab
    from taskarith_core.ui.common import config_from_source, explorer

    def merge_cfg(method: str, params: dict, images: int = merge_tab.PAGE_EVAL_SAMPLES):
        """The Merge tab's defaults: lp, Ns 32, seed 0, the page's evaluation images."""
        values = merge_tab.param_values(method, params)
        return merge_tab.merge_config(source, tasks, method, "lp", 32, 0, images, "test", *values)

    warm, _ = _timed(explorer(config_from_source(source)).warm, merge_tab.PAGE_EVAL_SAMPLES or None)
    _row(
        "start-up warm-up (lp importances, reference accuracies)",
        warm,
        float("inf"),
        "in a background thread after the page is served",
        cpu=CPU_SECONDS["last"],
    )
    cfg = merge_tab.default_config(source)
    first, _ = _timed(merge_tab.run_merge, cfg, [], references=False)
    _row("first STA run after the warm-up", first, 3.0, cpu=CPU_SECONDS["last"])
    refs, _ = _timed(merge_tab.run_merge, cfg, [])
    _row(
        "first Merge run including its references (cold)",
        refs,
        3.0,
        "TA with lambda chosen on val, random importance x 3 seeds, intervals",
        cpu=CPU_SECONDS["last"],
    )
    again, _ = _timed(merge_tab.run_merge, cfg, [])
    _row("  the same run again (references cached)", again, 3.0, cpu=CPU_SECONDS["last"])
    ta, cpu = _median_of(
        lambda lam: merge_tab.run_merge(
            merge_cfg("task_arithmetic", {"lam": lam}), [], references=False
        ),
        (0.15, 0.25, 0.35, 0.45),
    )
    _row(
        "merge + evaluate all tasks (TA, new lambda)",
        statistics.median(ta),
        3.0,
        f"median of 4, max {max(ta):.3f} s",
        cpu=cpu,
    )
    sta, cpu = _median_of(
        lambda p: merge_tab.run_merge(merge_cfg("sta", {"p": p}), [], references=False),
        (0.2, 0.45, 0.95),
    )
    _row(
        "merge + evaluate all tasks (STA, new p)",
        statistics.median(sta),
        3.0,
        f"median of 3, max {max(sta):.3f} s",
        cpu=cpu,
    )


def mask_latencies(source: dict, tasks: list[str]) -> None:
    """Dragging p on the Masks tab: the page redraws once, on release, for the last value (the
    heatmap callback, then the IoU drawn after it); this times that one redraw."""
    from taskarith_core.ui.masks_tab import update_iou, update_masks

    masks_inputs = (tasks, "sta", "lp")
    update_masks(source, "all", *masks_inputs, 0.5, 0.9, 32, 0)  # importances are warm now
    # 8 tasks: floor(7 p) differs between these p values, so every release builds new masks
    steps = (0.1, 0.3, 0.6, 0.75, 0.9)

    def release(p: float) -> None:
        update_masks(source, "all", *masks_inputs, p, 0.9, 32, 0)
        update_iou(source, "all", *masks_inputs, p, 0.9, 32, 0)

    drags, cpu = _median_of(release, steps)
    _row(
        "slider drag -> redraw for the last value (heatmap + IoU)",
        statistics.median(drags),
        1.0,
        f"median of {len(steps)}, max {max(drags):.3f} s; one redraw per drag",
        cpu=cpu,
    )
    same, cpu = _median_of(
        lambda p: update_masks(source, "all", *masks_inputs, p, 0.9, 32, 0), (0.92, 0.95)
    )
    _row("move p within the same rank (masks reused)", statistics.median(same), 1.0, cpu=cpu)


def xi_latency(source: dict, tasks: list[str], paradigm: str) -> None:
    """A 15 x 15 grid through the Disentanglement tab's ``xi_views``: one paradigm, then two
    side by side (the tab's default), each from cold caches."""
    from taskarith_core.ui.xi_tab import xi_views

    other = "attention" if paradigm != "attention" else "full"
    for sides, pair, target, name in (
        ((paradigm, "none"), (tasks[0], tasks[1]), 15.0, "15 x 15 xi grid, 256 samples per task"),
        ((paradigm, other), (tasks[2], tasks[3]), 30.0, "  two paradigms side by side"),
    ):
        grid, _ = _timed(
            xi_views, source, *pair, *sides, "plain", "ortiz", "prediction", 256, "lp", 0.8
        )
        _row(name, grid, target, " + ".join(pair), cpu=CPU_SECONDS["last"])


def _busy() -> None:
    """A CPU-bound process beside the measurements (the loaded-machine case)."""
    while True:
        sum(i * i for i in range(10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-root", default=None, help="zoo folder (default: assets/zoo)")
    parser.add_argument("--paradigm", default="full", choices=["full", "attention", "talos"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, as app.py's default")
    parser.add_argument(
        "--loaded",
        action="store_true",
        help="run a second CPU-bound process beside the measurements (a loaded machine)",
    )
    args = parser.parse_args()
    os.environ.setdefault("TASKARITH_CACHE", tempfile.mkdtemp(prefix="taskarith_bench_"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    busy = None
    if args.loaded:
        import multiprocessing

        busy = multiprocessing.Process(target=_busy, daemon=True)
        busy.start()
    try:
        print(
            f"CPU cores visible: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
            f"{'one busy process beside it' if busy else 'nothing else started'}"
        )
        wall, cpu = cold_start(args)
        _row("cold start: python app.py -> served page", wall, 5.0, cpu=cpu)
        page_latencies(args)
    finally:
        if busy is not None:
            busy.terminate()


if __name__ == "__main__":
    main()
