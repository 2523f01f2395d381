"""Merge speed and memory of every method on 8 task vectors shaped like ViT-B/32's image tower.

Writes random checkpoints (shapes from open_clip's config, no weights downloaded) once to a cache
folder, then runs each row in a fresh subprocess that times only the work, after its imports:
reading every input and writing one output (the floor), and each registered method's file merge
(its paper defaults) through the engine the CLI uses. With ``--fb-python`` (an interpreter where
``fusion_bench`` imports) the same files are merged by FusionBench's implementation of the
methods it has (``fb:`` rows: its state-dict arithmetic for task arithmetic and averaging, its
TSV-M and Iso-C / Iso-CTS functions), loading and saving with safetensors as ours does. Prints
seconds, the multiple of the floor and peak RSS. AdaMerging is not a file merge (it runs the model
on test images) and is not timed here.

    .venv/bin/python benchmarks/merge_speed.py [--tasks 8] [--dir /tmp/merge-bench] [--runs 3]
        [--methods floor,ties,pcb] [--fb-python /path/to/python] [--old /older/checkout]
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


def run_child(argv: list[str], cwd: Path = ROOT, python: str = sys.executable) -> tuple:
    """Seconds of the timed work (printed by the child as its last line) and peak RSS (GB) of
    one fresh Python process."""
    proc = subprocess.Popen(
        [python, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark child failed: {' '.join(argv)}")
    return float(output.split()[-1]), usage.ru_maxrss / 1024**2


def child_floor(paths: list[str], out: str) -> None:
    """Read every tensor of every input once, write one model: what any merge must at least do."""
    from taskarith_core.io import save_state_dict
    from taskarith_core.safetensors_reader import SafetensorsFile

    start = time.perf_counter()
    result = {}
    for path in paths:
        with SafetensorsFile(path) as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if path == paths[0]:
                    result[key] = tensor
    save_state_dict(result, out)
    print(time.perf_counter() - start)


def child_merge(method: str, pre: str, fts: list[str], imps: list[str], out: str) -> None:
    """One file merge through the CLI's engine (``stream_merge``), with the paper defaults."""
    from taskarith_core.fusion import MERGE_METHODS
    from taskarith_core.streaming import stream_merge

    sides = {"importances": imps} if MERGE_METHODS[method].needs == "importances" else {}
    start = time.perf_counter()
    stream_merge(method, pre, fts, out, **sides)
    print(time.perf_counter() - start)


def child_fusion_bench(method: str, pre: str, fts: list[str], out: str) -> None:
    """FusionBench's implementation of ``method`` on the same files (loaded and saved as ours)."""
    from fusion_bench.utils.state_dict_arithmetic import state_dict_add, state_dict_mul
    from safetensors.torch import load_file, save_file

    start = time.perf_counter()
    base = load_file(pre)
    vectors = []
    for path in fts:
        tuned = load_file(path)
        vectors.append({k: tuned[k] - base[k] for k in base})
        del tuned
    if method in ("task_arithmetic", "average"):
        total = vectors[0]
        for vector in vectors[1:]:
            total = state_dict_add(total, vector)
        scale = 0.4 if method == "task_arithmetic" else 1 / len(vectors)
        merged = state_dict_mul(total, scale)
    elif method == "tsv_m":
        from fusion_bench.method.task_singular_vector.utils.TSVM_utils import (
            compute_and_sum_svd_mem_reduction,
        )

        merged = compute_and_sum_svd_mem_reduction(vectors, accelerator="cpu")
    else:
        from fusion_bench.method.isotropic_merging.iso_utils import iso_c, iso_cts

        merged = (
            iso_c(vectors, accelerator="cpu")
            if method == "iso_c"
            else iso_cts(vectors, 0.8, accelerator="cpu")
        )
    save_file({k: v.contiguous() for k, v in state_dict_add(base, merged).items()}, out)
    print(time.perf_counter() - start)


#: the methods FusionBench implements that the ``fb:`` rows time
FUSION_BENCH = ("task_arithmetic", "average", "tsv_m", "iso_c", "iso_cts")


def plan(
    paths: dict[str, list[Path]], out: str, old: Path | None, fb_python: str | None
) -> dict[str, tuple]:
    """Row name -> (argv, working folder, interpreter): the floors, then each method's merge."""
    from taskarith_core.fusion import MERGE_METHODS

    pre, fts = str(paths["pre"][0]), [str(p) for p in paths["ft"]]
    imps = [str(p) for p in paths["imp"]]
    script = str(ROOT / "benchmarks" / "merge_speed.py")
    py = sys.executable
    rows = {
        "floor": ([script, "--floor", pre, *fts, out], ROOT, py),
        "floor2n": ([script, "--floor", pre, *fts, *imps, out], ROOT, py),
    }
    for method, spec in MERGE_METHODS.items():
        if spec.needs in (None, "importances"):
            argv = [script, "--child", method, "--out", out, pre, *fts, "--imps", *imps]
            rows[method] = (argv, ROOT, py)
            if old is not None:  # the same engine from another checkout, in the same session
                rows[f"{method}@old"] = (argv, old, py)
    if fb_python:
        for method in FUSION_BENCH:
            argv = [script, "--fusion-bench", method, "--out", out, pre, *fts]
            rows[f"fb:{method}"] = (argv, ROOT, fb_python)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--dir", default="/tmp/merge-bench")
    parser.add_argument(
        "--methods",
        default="all",
        help="comma-separated rows: floor (read N+1 inputs, write one), floor2n (2N+1 inputs), "
        "any file-merge method, fb:METHOD with --fb-python, NAME@old with --old; all = every row",
    )
    parser.add_argument("--fb-python", help="a Python where fusion_bench imports: fb: rows")
    parser.add_argument("--runs", type=int, default=1, help="rounds of all rows; medians shown")
    parser.add_argument("--old", type=Path, help="another checkout of the code to time as @old")
    parser.add_argument("--floor", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fusion-bench", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--imps", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        child_floor(args.floor[:-1], args.floor[-1])
        return
    if args.child:
        child_merge(args.child, args.inputs[0], args.inputs[1:], args.imps, args.out)
        return
    if args.fusion_bench:
        child_fusion_bench(args.fusion_bench, args.inputs[0], args.inputs[1:], args.out)
        return
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # children too: fair under a busy machine
    paths = write_inputs(Path(args.dir), args.arch, args.tasks)
    out = str(Path(args.dir) / f"out-{os.getpid()}.safetensors")  # private: others may run too
    rows = plan(paths, out, args.old, args.fb_python)
    names = list(rows) if args.methods == "all" else args.methods.split(",")
    unknown = [name for name in names if name not in rows]
    if unknown or "floor" not in names:
        raise SystemExit(f"unknown rows {unknown} (need floor; known: {', '.join(rows)})")
    results = {name: [] for name in names}
    print(f"{args.tasks} tasks shaped like {args.arch} image tower, 1 thread, files in {args.dir}")
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for _ in range(args.runs):
            for name in names:
                try:
                    results[name].append(run_child(*rows[name]))
                except RuntimeError as exc:  # e.g. out of memory: say so, time the rest
                    print(f"{name}: {exc}", flush=True)
                    continue
                seconds, rss = results[name][-1]
                ratio = seconds / results["floor"][-1][0]
                print(
                    f"  {name:22s} {seconds:8.1f} s {ratio:6.2f}x floor {rss:6.2f} GB", flush=True
                )
    finally:
        Path(out).unlink(missing_ok=True)
    print(f"{'row':24s} {'median s':>9s} {'x floor':>8s} {'peak RSS GB':>12s}  (x: per-run median)")
    for name in names:
        if not results[name]:
            continue
        seconds = [wall for wall, _ in results[name]]
        ratios = [wall / floor for (wall, _), (floor, _) in zip(results[name], results["floor"])]
        rss = max(r for _, r in results[name])
        print(f"{name:24s} {statistics.median(seconds):9.1f} {statistics.median(ratios):8.2f} "
              f"{rss:12.2f}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}; sta reads 2N+1 files: compare floor2n")


if __name__ == "__main__":
    main()
