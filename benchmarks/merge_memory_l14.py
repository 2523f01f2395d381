"""Peak RSS of an 8-task streaming merge at ViT-L/14 scale (random weights, open_clip's shapes).

    python benchmarks/merge_memory_l14.py [--dir /tmp/l14] [--methods task_arithmetic,ties,sta]

Writes a ViT-L/14 image tower (304M parameters, float32, 1.2 GB) and 8 "fine-tuned" copies
(pretrained + seeded noise) as safetensors -- plus, for STA, 8 amplitude importances -- then runs
each merge with :func:`taskarith_core.streaming.stream_merge` in a fresh subprocess and reports its
peak resident set size (``ru_maxrss``) beside the RSS of the bare imports. Target: < 4 GB.
Files are reused between runs when present; disk needed: ~11 GB (~21 GB with STA).

Measured 2026-11-25 on the 2-core CPU dev machine (shared, load ~5-10), torch 2.14.1, no GPU,
after the streaming writer landed (commit faa6cdb): task_arithmetic 2.6 GB (83 s), sta with amp
importances 3.0 GB (300 s), ties 2.7 GB (547 s); 2.4-2.8 GB of it anonymous, file-backed ~0.37 GB.
Before it (save_state_dict cloned the output): 2.6-3.2 / 3.3 / 3.2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
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
PARAMS = {"task_arithmetic": {"lam": 0.3}, "ties": {"lam": 0.3}, "sta": {"p": 0.7}}


def _write_models(folder: Path) -> tuple[Path, list[Path], list[Path]]:
    """Pretrained, fine-tuned and amp-importance files, one tensor generated at a time."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = arch_shapes(ARCH)
    pre_path = folder / "pretrained.safetensors"
    fts = [folder / f"task{t}.safetensors" for t in range(N_TASKS)]
    imps = [folder / f"task{t}.amp.safetensors" for t in range(N_TASKS)]
    if not pre_path.exists():
        gen = torch.Generator().manual_seed(0)
        save_state_dict(
            {k: 0.02 * torch.randn(s, generator=gen) for k, s in shapes.items()}, pre_path
        )
    from safetensors import safe_open

    for t, (ft, imp) in enumerate(zip(fts, imps)):
        if ft.exists() and imp.exists():
            continue
        gen = torch.Generator().manual_seed(t + 1)
        state = {}
        with safe_open(str(pre_path), "pt") as pre:
            for key in pre.keys():
                tensor = pre.get_tensor(key)
                state[key] = tensor + 0.002 * torch.randn(tensor.shape, generator=gen)
        save_state_dict(state, ft)
        save_state_dict({k: v.square_() for k, v in state.items()}, imp)  # in place: no copy
        del state
    return pre_path, fts, imps


def _measure(method: str, folder: Path) -> dict:
    """Run in the child: one streaming merge; the parent samples its memory meanwhile."""
    from taskarith_core.streaming import stream_merge

    pre = folder / "pretrained.safetensors"
    fts = [folder / f"task{t}.safetensors" for t in range(N_TASKS)]
    imps = [folder / f"task{t}.amp.safetensors" for t in range(N_TASKS)] if method == "sta" else ()
    start = time.perf_counter()
    stream_merge(method, pre, fts, folder / f"merged_{method}.safetensors",
                 importances=imps, params=PARAMS[method])  # fmt: skip
    return {"method": method, "seconds": round(time.perf_counter() - start, 1),
            "hwm_mb": _status(os.getpid()).get("VmHWM", 0)}  # fmt: skip


def _status(pid: int) -> dict[str, float]:
    """VmRSS / RssAnon / RssFile / VmHWM of a process in MB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def _run_child(method: str, folder: Path) -> dict:
    """Start the merge in a fresh interpreter and sample its memory every 50 ms."""
    cmd = [sys.executable, __file__, "--dir", str(folder), "--measure", method]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    while child.poll() is None:
        for key, value in _status(child.pid).items():
            if key in peak:
                peak[key] = max(peak[key], value)
        time.sleep(0.05)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{method} failed: {stderr[-2000:]}")
    row = json.loads(stdout.strip().splitlines()[-1])
    return {**row, **{f"peak_{k}_mb": v for k, v in peak.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/taskarith_l14_bench"))
    parser.add_argument("--methods", default="task_arithmetic,ties,sta")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.measure:
        print(json.dumps(_measure(args.measure, args.dir)))
        return 0
    pre, fts, _ = _write_models(args.dir)
    n_params = sum(s.numel() for s in arch_shapes(ARCH).values())
    print(f"{ARCH} image tower: {n_params / 1e6:.1f}M parameters, {pre.stat().st_size / 2**30:.2f} "
          f"GiB per file, {len(fts)} fine-tuned files in {args.dir}")  # fmt: skip
    for method in args.methods.split(","):
        row = _run_child(method, args.dir)
        verdict = "OK" if row["hwm_mb"] < 4096 else "OVER 4 GB"
        print(
            f"{method:16s} peak RSS {row['hwm_mb']:6.0f} MB (sampled: anonymous "
            f"{row['peak_RssAnon_mb']:.0f} MB, file-backed {row['peak_RssFile_mb']:.0f} MB), "
            f"{row['seconds']:.1f} s  {verdict}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
