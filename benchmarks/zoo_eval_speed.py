"""Time loading the embedded zoo and evaluating one edited model on every task (target: < 1 s).

    python benchmarks/zoo_eval_speed.py [--root assets/zoo] [--paradigm full] [--threads 1 2]
                                        [--repeats 5] [--compare]

"Load" is opening the zoo (config, task spec, heads) and reading theta_pre and every theta_t;
"evaluate" is the accuracy of one task-arithmetic merge (lambda 0.3) on every task's test split
(all 1000 images each), with the data already generated (the first call generates it from its
seed and is timed apart). Evaluation is timed ``--repeats`` times per torch thread count and the
median is reported. ``--compare`` also times open_clip's module forward (the path before
``models.fast_forward``) in the same process, alternating with the functional one, and prints the
speed-up; both must give the same accuracies. On a shared machine quote the load average too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time_evaluation(source, merged, module: bool) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and mean accuracy of one evaluation; ``module`` forces the module
    forward. CPU seconds barely grow with the load of a shared machine; wall seconds do."""
    from taskarith_core.models import evaluation

    fast = evaluation.tower_forward
    if module:
        evaluation.tower_forward = lambda visual: visual
    try:
        start, cpu = time.perf_counter(), time.process_time()
        frame = evaluation.evaluate_states(source, {"ta": merged}, source.tasks)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return wall, cpu, float(frame["accuracy"].mean())
    finally:
        evaluation.tower_forward = fast


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="zoo folder (default: assets/zoo)")
    parser.add_argument("--paradigm", default="full")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare", action="store_true", help="also time the module forward")
    args = parser.parse_args()
    torch.set_num_threads(args.threads[0])

    from taskarith_core.fusion import merge
    from taskarith_core.models.evaluation import evaluate_states, split_tensors
    from taskarith_core.zoo import load_zoo

    start = time.perf_counter()
    source = load_zoo(args.paradigm, args.root)
    pre = source.load_pretrained()
    fts = [source.load_finetuned(t) for t in source.tasks]
    loaded = time.perf_counter() - start

    start = time.perf_counter()
    for task in source.tasks:
        split_tensors(source, task, "test")
    generated = time.perf_counter() - start

    merged = merge("task_arithmetic", pre, fts, lam=0.3)
    evaluate_states(source, {"warm-up": pre}, source.tasks[:1])  # builds the shared tower once
    images = sum(len(split_tensors(source, t, "test")[1]) for t in source.tasks)
    print(f"zoo/{args.paradigm}: {len(source.tasks)} tasks, {images} test images")
    print(f"load zoo + all checkpoints: {loaded:.3f} s")
    print(f"generate test data (first use only): {generated:.3f} s")
    kinds = ["functional", "module"] if args.compare else ["functional"]
    for threads in args.threads:
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        cpus: dict[str, list[float]] = {k: [] for k in kinds}
        accuracy: dict[str, float] = {}
        for _ in range(args.repeats):
            for kind in kinds:
                wall, cpu, accuracy[kind] = _time_evaluation(source, merged, kind == "module")
                times[kind].append(wall)
                cpus[kind].append(cpu)
        median = {k: statistics.median(v) for k, v in times.items()}
        line = (
            f"threads={threads}: evaluate one merged model on every task: "
            f"{median['functional']:.3f} s median of {args.repeats} "
            f"(min {min(times['functional']):.3f}, CPU {statistics.median(cpus['functional']):.3f} "
            f"s; mean acc {accuracy['functional']:.4f})"
        )
        if args.compare:
            line += (
                f"; module forward {median['module']:.3f} s (CPU "
                f"{statistics.median(cpus['module']):.3f} s, acc {accuracy['module']:.4f}), "
                f"speed-up x{median['module'] / median['functional']:.2f}"
            )
        print(line)
        print(
            f"threads={threads}: load + evaluate: {loaded + median['functional']:.3f} s "
            "(target < 1 s)"
        )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
