"""Time loading the embedded zoo and evaluating one edited model on every task (target: < 1 s).

    python benchmarks/zoo_eval_speed.py [--root assets/zoo] [--paradigm full] [--threads 1]

"Load" is opening the zoo (config, task spec, heads) and reading theta_pre and every theta_t;
"evaluate" is the accuracy of one task-arithmetic merge (lambda 0.3) on every task's test split,
with the data already generated (the first call generates it from its seed and is timed apart).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="zoo folder (default: assets/zoo)")
    parser.add_argument("--paradigm", default="full")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

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
    start = time.perf_counter()
    frame = evaluate_states(source, {"ta": merged}, source.tasks)
    evaluated = time.perf_counter() - start
    images = sum(len(split_tensors(source, t, "test")[1]) for t in source.tasks)
    print(
        f"zoo/{args.paradigm}: {len(source.tasks)} tasks, {images} test images, "
        f"threads={args.threads}"
    )
    print(f"load zoo + all checkpoints: {loaded:.3f} s")
    print(f"generate test data (first use only): {generated:.3f} s")
    print(
        f"evaluate one merged model on every task: {evaluated:.3f} s "
        f"(mean acc {frame['accuracy'].mean():.3f})"
    )
    print(f"load + evaluate: {loaded + evaluated:.3f} s (target < 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
