"""Peak RSS of ``reproduce``'s addition-protocol merge step on 8 ViT-L/14-shaped image towers.

    python benchmarks/reproduce_memory.py [--dir /tmp/taskarith_repro_l14] [--methods ta,ties]
        [--values 0.1,0.3,0.5] [--evaluator tower|none] [--keep]

Writes a random ViT-L/14 image tower (open_clip's shapes, 304M parameters) and 8 "fine-tuned"
copies (pretrained + seeded noise) as float16 safetensors (~0.6 GB each, ~5.5 GB in all), wraps
them in a file-based model source and, in a fresh subprocess per method, runs what the streamed
addition protocol runs per grid value: :func:`taskarith_core.real.streamed.streamed_method` then
``merge(value)`` for each value. Evaluating an L/14 on 2 CPU cores is too slow to repeat here, so
the evaluator (``--evaluator tower``, the default) only copies each merged state into an L/14
image tower, as ``evaluate_states`` does before running images: the memory is that of the real
protocol minus the image batches. ``--evaluator none`` measures the merge alone. The model files
are deleted at the end unless ``--keep``; temp files of the merge live in $TMPDIR.

Target: peak RSS < 4 GB.

Measured 2026-11-25 on the 2-core CPU dev machine (shared, load 5-8), torch threads 1, VmHWM in MiB,
evaluator=tower: ta 3180-3228 (none: 1834; imports 543, + tower 1947), ties 3204-3207, sta-amp
(p=0.7) 3937-4048. Before the merged copy went into one block and freed heap was trimmed after each
file pass: ta 3643-3684, ties 3902-4126.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taskarith_core.io import save_state_dict  # noqa: E402
from taskarith_core.real.convert import arch_shapes  # noqa: E402

ARCH = "ViT-L-14"
N_TASKS = 8
VALUES = {"ta": "0.1,0.3,0.5", "ties": "0.5,1.0", "sta-amp": "0.7"}


def _write_models(folder: Path) -> tuple[Path, list[Path]]:
    """Pretrained and fine-tuned towers in float16, one tensor generated at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = arch_shapes(ARCH)
    pre_path = folder / "pretrained.safetensors"
    fts = [folder / f"task{t}.safetensors" for t in range(N_TASKS)]
    if not pre_path.exists():
        gen = torch.Generator().manual_seed(0)
        state = {k: (0.02 * torch.randn(s, generator=gen)).half() for k, s in shapes.items()}
        save_state_dict(state, pre_path)
        del state
    for t, ft in enumerate(fts):
        if ft.exists():
            continue
        gen = torch.Generator().manual_seed(t + 1)
        from safetensors import safe_open

        with safe_open(str(pre_path), "pt") as pre:
            state = {
                k: (pre.get_tensor(k).float() + 0.002 * torch.randn(s, generator=gen)).half()
                for k, s in shapes.items()
            }
        save_state_dict(state, ft)
        del state
    return pre_path, fts


def _source(folder: Path):
    from taskarith_core.models.files import FileSource

    def no_data(task: str, split: str):
        raise RuntimeError("the benchmark runs no images")

    return FileSource(
        name="l14-bench",
        arch=ARCH,
        pretrained=folder / "pretrained.safetensors",
        finetuned={f"task{t}": folder / f"task{t}.safetensors" for t in range(N_TASKS)},
        classnames={},
        data=no_data,
    )


def _vm(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM of a process in MB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _measure(method: str, values: list[float], folder: Path, evaluator: str) -> dict:
    """In the child: the streamed merge of each value, then (optionally) a copy into a tower."""
    from taskarith_core.models.clip import build_visual_tower, load_visual_state
    from taskarith_core.real.streamed import streamed_method

    source = _source(folder)
    visual = build_visual_tower(ARCH) if evaluator == "tower" else None
    base = _vm(os.getpid()).get("VmRSS", 0.0)
    times = []
    start = time.perf_counter()
    with streamed_method(source, method, source.tasks, values=values) as prep:
        setup = time.perf_counter() - start
        for value in values:
            tick = time.perf_counter()
            state = prep.merge(value)
            if visual is not None:
                load_visual_state(visual, state)
            del state
            times.append(round(time.perf_counter() - tick, 1))
    hwm = _vm(os.getpid()).get("VmHWM", 0.0)
    return {"method": method, "setup_s": round(setup, 1), "per_value_s": times,
            "rss_before_mb": round(base), "hwm_mb": round(hwm)}  # fmt: skip


def _run_child(method: str, values: str, folder: Path, evaluator: str) -> dict:
    cmd = [sys.executable, __file__, "--dir", str(folder), "--measure", method,
           "--values", values, "--evaluator", evaluator]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/taskarith_repro_l14"))
    parser.add_argument("--methods", default="ta,ties")
    parser.add_argument("--values", help="grid values (default: a few per method)")
    parser.add_argument("--evaluator", choices=("tower", "none"), default="tower")
    parser.add_argument("--keep", action="store_true", help="keep the model files")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.measure:
        values = [float(v) for v in args.values.split(",")]
        print(json.dumps(_measure(args.measure, values, args.dir, args.evaluator)))
        return 0
    pre, fts = _write_models(args.dir)
    print(f"{ARCH} image tower, float16 files of {pre.stat().st_size / 2**30:.2f} GiB, "
          f"{len(fts)} fine-tuned, evaluator={args.evaluator}", flush=True)  # fmt: skip
    try:
        for method in args.methods.split(","):
            values = args.values or VALUES.get(method, "0.5")
            row = _run_child(method, values, args.dir, args.evaluator)
            verdict = "OK" if row["hwm_mb"] < 4096 else "OVER 4 GB"
            print(f"{method:8s} values {values}: peak RSS {row['hwm_mb']} MB (after imports"
                  f"{' + tower' if args.evaluator == 'tower' else ''}: {row['rss_before_mb']} MB),"
                  f" setup {row['setup_s']} s, per value {row['per_value_s']} s  {verdict}",
                  flush=True)  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
