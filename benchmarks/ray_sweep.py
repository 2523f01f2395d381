"""A 20-point sweep on the zoo: the local executor against Ray with 2 workers, in the same run.

    python benchmarks/ray_sweep.py [--method ta] [--points 20] [--workers 2] [--max-samples N]

Both sweep task arithmetic over the same 20 lambda values on all 8 zoo tasks (whole test split
unless --max-samples), one torch thread per process. The reference accuracies are computed once
before either is timed (both read them from the disk cache). Ray is timed twice: cold (workers
start, import torch, open the zoo) and warm (the same workers again). Printed: wall times, the
speed-up, and the overhead Ray adds per point = (workers x warm wall - local wall) / points, the
worker-seconds a point costs beyond its own merge and evaluation (transfers, scheduling, result
return), plus the one-off costs (starting Ray, the cold workers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sweep(source, values, executor, max_samples) -> tuple[float, object]:
    from taskarith_core.analyses.sweeps import accuracy_sweep

    start = time.perf_counter()
    frame = accuracy_sweep(
        source, "ta", values, device="cpu", max_samples=max_samples, executor=executor
    )
    return time.perf_counter() - start, frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args()

    import torch

    from taskarith_core.executor import LOCAL, ExecutorSpec, open_executor
    from taskarith_core.models.evaluation import reference_accuracies
    from taskarith_core.zoo import load_zoo

    torch.set_num_threads(1)
    source = load_zoo("full")
    values = [round(0.05 * (i + 1), 2) for i in range(args.points)]
    reference_accuracies(source, split="test", device="cpu", max_samples=args.max_samples)
    _sweep(source, values[:1], LOCAL, args.max_samples)  # data and tower warm for local too
    local, expected = _sweep(source, values, LOCAL, args.max_samples)
    print(f"local executor: {local:.1f} s ({local / args.points:.2f} s per point)", flush=True)

    start = time.perf_counter()
    with open_executor(ExecutorSpec("ray", cpus=args.workers)) as executor:
        started = time.perf_counter() - start
        cold, frame = _sweep(source, values, executor, args.max_samples)
        warm, again = _sweep(source, values, executor, args.max_samples)
    same = frame.equals(expected) and again.equals(expected)
    overhead = (args.workers * warm - local) / args.points
    print(f"ray start + cluster checks: {started:.1f} s")
    print(f"ray {args.workers} workers, cold: {cold:.1f} s; warm: {warm:.1f} s")
    cold_total = started + cold
    print(f"speed-up (warm): {local / warm:.2f}x; cold incl. start: {local / cold_total:.2f}x")
    print(f"overhead Ray adds per point: {overhead:+.3f} worker-s; rows identical: {same}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
