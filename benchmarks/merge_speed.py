"""Streaming-merge speed and memory on 8 task vectors shaped like open_clip's ViT-B/32 image tower.

Writes random checkpoints (shapes from open_clip's config, no weights downloaded) once to a cache
folder, then times in fresh subprocesses: reading every input and writing one output (the floor),
and the sta, ties and task_arithmetic merges through the CLI's own code path. Prints seconds, the
ratio to the floor (target <= 3x) and peak RSS (target < 1.5 GB for 8 tasks).

    .venv/bin/python benchmarks/merge_speed.py [--tasks 8] [--dir /tmp/merge-bench]
"""

from __future__ import annotations

import argparse
import os
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


def run_child(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one fresh Python process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stderr=subprocess.DEVNULL)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--dir", default="/tmp/merge-bench")
    parser.add_argument("--floor", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        child_floor(args.floor[:-1], args.floor[-1])
        return
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # children too: fair under a busy machine
    paths = write_inputs(Path(args.dir), args.arch, args.tasks)
    pre, fts, imps = (
        str(paths["pre"][0]),
        [str(p) for p in paths["ft"]],
        [str(p) for p in paths["imp"]],
    )
    out = str(Path(args.dir) / "out.safetensors")
    runs = {
        "floor (read inputs, write output)": [
            "benchmarks/merge_speed.py",
            "--floor",
            pre,
            *fts,
            out,
        ],
        "floor with importances (2N+1 files)": [
            "benchmarks/merge_speed.py",
            "--floor",
            pre,
            *fts,
            *imps,
            out,
        ],
        "task_arithmetic": [
            "-m",
            "taskarith_core",
            "merge",
            "--method",
            "task_arithmetic",
            "--lam",
            "0.3",
            "--pretrained",
            pre,
            "--finetuned",
            *fts,
            "--out",
            out,
        ],
        "ties": [
            "-m",
            "taskarith_core",
            "merge",
            "--method",
            "ties",
            "--k",
            "0.2",
            "--lam",
            "1.0",
            "--pretrained",
            pre,
            "--finetuned",
            *fts,
            "--out",
            out,
        ],
        "sta": [
            "-m",
            "taskarith_core",
            "merge",
            "--method",
            "sta",
            "--p",
            "0.7",
            "--pretrained",
            pre,
            "--finetuned",
            *fts,
            "--importance",
            *imps,
            "--out",
            out,
        ],
    }
    floor_s = None
    print(f"{args.tasks} tasks shaped like {args.arch} image tower, 1 thread, files in {args.dir}")
    print(f"{'run':38s} {'seconds':>8s} {'x floor':>8s} {'peak RSS GB':>12s}")
    for name, argv in runs.items():
        wall, rss = run_child(argv)
        floor_s = floor_s or wall
        print(f"{name:38s} {wall:8.1f} {wall / floor_s:8.2f} {rss:12.2f}", flush=True)
    print("x floor: against the first row; sta reads 2N+1 files, compare it with the second row")


if __name__ == "__main__":
    main()
