"""Time a 15x15 disentanglement-error grid with 256 samples per task (target: < 30 s on 2 cores).

    python benchmarks/xi_speed.py [--paradigm full] [--zoo-root DIR] [--points 15] [--samples 256]
                                  [--threads 1] [--workers 2] [--module]

On the embedded zoo it runs ``analyses.xi.disentanglement_grid`` end to end (data, heads, one
tower reused, no disk cache). When the zoo has not been built yet it says so and times the same
compute path (``TowerMixer`` + ``xi_from_runner`` + ``batched_logits``) on a randomly initialised
tower of the zoo's architecture with random task vectors and images, so the number is still the
cost of the grid. ``--module`` times open_clip's module forward with the old 256-image batches
instead of the functional forward of ``models.fast_forward`` (same grid values, for comparison in
the same session).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _zoo_run(args) -> tuple[tuple[float, float], str]:
    from taskarith_core.analyses.xi import XiGrid, disentanglement_grid
    from taskarith_core.zoo import load_zoo

    source = load_zoo(args.paradigm, root=args.zoo_root)
    tasks = source.tasks[:2]
    grid = XiGrid(args.points, -2.0, 2.0)
    start, cpu = time.perf_counter(), time.process_time()
    frame = disentanglement_grid(
        source,
        tasks[0],
        tasks[1],
        grid=grid,
        samples=args.samples,
        use_cache=False,
        workers=args.workers,
        batch_size=256 if args.module else None,
    )
    elapsed = (time.perf_counter() - start, time.process_time() - cpu)
    what = f"zoo/{args.paradigm} {tasks[0]} + {tasks[1]}, mean xi {frame['xi'].mean():.3f}"
    return elapsed, what


def _synthetic_run(args) -> tuple[tuple[float, float], str]:
    from taskarith_core.analyses._common import TowerMixer
    from taskarith_core.analyses.xi import CPU_BATCH, XiGrid, xi_from_runner
    from taskarith_core.models.clip import build_visual_tower, register_arch
    from taskarith_core.models.evaluation import batched_logits
    from taskarith_core.zoo.arch import ARCH_NAME, model_config

    register_arch(model_config(vocab_size=512), ARCH_NAME)
    torch.manual_seed(0)  # the same stand-in in every run, so grids can be compared
    visual = build_visual_tower(ARCH_NAME)
    pre = {f"visual.{k}": v.detach().clone() for k, v in visual.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    vectors = [
        {
            k: 0.05 * torch.randn(v.shape, generator=gen) * v.std().clamp_min(1e-3)
            for k, v in pre.items()
        }
        for _ in range(2)
    ]
    embed = visual.output_dim
    data = [
        (torch.randn(args.samples, 3, 28, 28, generator=gen), torch.randn(10, embed, generator=gen))
        for _ in range(2)
    ]

    def runner(tower):
        mixer = TowerMixer(tower, pre, vectors)

        def run(a1, a2, images, head):
            size = 256 if args.module else CPU_BATCH
            return batched_logits(mixer.set((a1, a2)), images, head, batch_size=size, device="cpu")

        return run

    towers = [visual] + [build_visual_tower(ARCH_NAME) for _ in range(args.workers - 1)]
    run, *workers = [runner(t) for t in towers]

    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        frame = xi_from_runner(run, data, XiGrid(args.points, -2.0, 2.0).alphas(), workers=workers)
    elapsed = (time.perf_counter() - start, time.process_time() - cpu)
    return elapsed, f"synthetic zoo-shaped tower (zoo not built), mean xi {frame['xi'].mean():.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paradigm", default="full")
    parser.add_argument("--zoo-root", help="zoo folder (default: the shipped assets/zoo)")
    parser.add_argument("--points", type=int, default=15)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--workers", type=int, default=2, help="grid rows in parallel threads")
    parser.add_argument("--synthetic", action="store_true", help="skip the zoo even if built")
    parser.add_argument("--module", action="store_true", help="time the module forward instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.module:
        from taskarith_core.models import evaluation

        evaluation.tower_forward = lambda visual: visual
    try:
        if args.synthetic:
            raise FileNotFoundError
        elapsed, what = _zoo_run(args)
    except Exception as exc:  # the zoo is missing: time the same path on a stand-in
        if not args.synthetic:
            print(
                f"zoo unavailable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            )
        elapsed, what = _synthetic_run(args)
    wall, cpu = elapsed
    load = os.getloadavg()[0]
    print(
        f"xi {args.points}x{args.points}, {args.samples} samples/task, {args.threads} torch "
        f"thread(s) x {args.workers} worker(s): "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU (load average {load:.1f} on {os.cpu_count()} cores; "
        f"{args.points**2} edited models, {'module' if args.module else 'functional'} forward) "
        f"-- {what}"
    )


if __name__ == "__main__":
    main()
