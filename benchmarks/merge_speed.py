"""Streaming-merge speed and memory on 8 task vectors shaped like open_clip's ViT-B/32 image tower.

Writes random checkpoints (shapes from open_clip's config, no weights downloaded) once to a cache
folder, then times in fresh subprocesses: reading every input and writing one output (the floor),
and the sta, ties and task_arithmetic merges through the CLI's own code path. Prints seconds, the
ratio to the floor (target <= 3x) and peak RSS (target < 1.5 GB for 8 tasks).

    .venv/bin/python benchmarks/merge_speed.py [--tasks 8] [--dir /tmp/merge-bench] [--runs 3]
        [--methods floor,ties,ties@old --old /path/to/older/checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def visual_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    import open_clip

    model = open_clip.create_model(arch, pretrained=None)
    return {f"visual.{k}": tuple(v.shape) for k, v in model.visual.state_dict().items()}


def write_inputs(folder: Path, arch: str, tasks: int) -> dict[str, list[Path]]:
    """Random theta_pre, theta_t = theta_pre + noise and |noise|-like importances (cached)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "pre": [folder / "pre.safetensors"],
        "ft": [folder / f"ft{t}.safetensors" for t in range(tasks)],
        "imp": [folder / f"imp{t}.safetensors" for t in range(tasks)],
    }
    if all(p.exists() for group in paths.values() for p in group):
        return paths
    shapes = visual_shapes(arch)
    gen = torch.Generator().manual_seed(0)
    pre = {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}
    save_file(pre, paths["pre"][0])
    for ft_path, imp_path in zip(paths["ft"], paths["imp"]):
        delta = {k: torch.randn(s, generator=gen) * 1e-3 for k, s in shapes.items()}
        save_file({k: pre[k] + d for k, d in delta.items()}, ft_path)
        save_file({k: d.abs() for k, d in delta.items()}, imp_path)
    return paths


def run_child(argv: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one fresh Python process."""
    start = time.perf_counter()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, **quiet)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss / 1024**2


def child_floor(paths: list[str], out: str) -> None:
    """Read every tensor of every input once, write one model: what any merge must at least do."""
    from taskarith_core.io import save_state_dict
    from taskarith_core.safetensors_reader import SafetensorsFile

    result = {}
    for path in paths:
        with SafetensorsFile(path) as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if path == paths[0]:
                    result[key] = tensor
    save_state_dict(result, out)


def _merge_argv(method: str, flags: list[str], pre: str, fts: list[str], out: str) -> list[str]:
    return ["-m", "taskarith_core", "merge", "--method", method, *flags,
            "--pretrained", pre, "--finetuned", *fts, "--out", out]  # fmt: skip


def plan(paths: dict[str, list[Path]], out: str, old: Path | None) -> dict[str, tuple]:
    """Row name -> (argv, working folder): the floors, then each method's CLI merge."""
    pre, fts = str(paths["pre"][0]), [str(p) for p in paths["ft"]]
    imps = [str(p) for p in paths["imp"]]
    floor = [str(ROOT / "benchmarks" / "merge_speed.py"), "--floor"]
    rows = {
        "floor": ([*floor, pre, *fts, out], ROOT),
        "floor2n": ([*floor, pre, *fts, *imps, out], ROOT),
        "task_arithmetic": (_merge_argv("task_arithmetic", ["--lam", "0.3"], pre, fts, out), ROOT),
        "ties": (_merge_argv("ties", ["--keep", "0.2", "--lam", "1.0"], pre, fts, out), ROOT),
        "sta": (_merge_argv("sta", ["--p", "0.7", "--importance", *imps], pre, fts, out), ROOT),
    }
    if old is not None:  # the same CLI run from another checkout: before/after in one session
        for name in ["task_arithmetic", "ties", "sta"]:
            rows[f"{name}@old"] = (rows[name][0], old)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--dir", default="/tmp/merge-bench")
    parser.add_argument(
        "--methods",
        default="floor,floor2n,task_arithmetic,ties,sta",
        help="comma-separated rows: floor (read N+1 inputs, write one), floor2n (2N+1 inputs), "
        "task_arithmetic, ties, sta, and NAME@old with --old",
    )
    parser.add_argument("--runs", type=int, default=1, help="rounds of all rows; medians shown")
    parser.add_argument("--old", type=Path, help="another checkout of the code to time as @old")
    parser.add_argument("--floor", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        child_floor(args.floor[:-1], args.floor[-1])
        return
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # children too: fair under a busy machine
    paths = write_inputs(Path(args.dir), args.arch, args.tasks)
    out = str(Path(args.dir) / f"out-{os.getpid()}.safetensors")  # private: others may run too
    rows = plan(paths, out, args.old)
    names = args.methods.split(",")
    unknown = [name for name in names if name not in rows]
    if unknown or "floor" not in names:
        raise SystemExit(f"unknown rows {unknown} (need floor; known: {', '.join(rows)})")
    results = {name: [] for name in names}
    print(f"{args.tasks} tasks shaped like {args.arch} image tower, 1 thread, files in {args.dir}")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for _ in range(args.runs):
            for name in names:
                results[name].append(run_child(*rows[name]))
            floor = results["floor"][-1][0]
            print("run: " + "  ".join(f"{n} {results[n][-1][0] / floor:.2f}x" for n in names))
    finally:
        Path(out).unlink(missing_ok=True)
    print(f"{'row':24s} {'median s':>9s} {'x floor':>8s} {'peak RSS GB':>12s}  (x: per-run median)")
    for name in names:
        seconds = [wall for wall, _ in results[name]]
        ratios = [wall / floor for (wall, _), (floor, _) in zip(results[name], results["floor"])]
        rss = max(r for _, r in results[name])
        print(f"{name:24s} {statistics.median(seconds):9.1f} {statistics.median(ratios):8.2f} "
              f"{rss:12.2f}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}; sta reads 2N+1 files: compare floor2n")


if __name__ == "__main__":
    main()
