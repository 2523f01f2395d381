"""Time loading the zoo and evaluating one edited model on every task (target: < 1 s on CPU).

    python benchmarks/eval_speed.py [--paradigm full] [--zoo-root DIR] [--threads 1]
                                    [--device cpu] [--repeats 3] [--samples 32] [--max-samples N]

Reports, on the embedded zoo: opening the source, the first evaluation (data, heads and the one
reused tower are loaded then), the median of ``--repeats`` further evaluations of freshly edited
models (task arithmetic, lambda 0.3, over all tasks: what a page click or a sweep step costs), and
lp / fisher importance with Ns samples on one task. When the zoo has not been built yet it says so
and times the same code on a randomly initialised model of the zoo's architecture and data sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _synthetic_source(folder: Path):
    """Random weights with the zoo's shapes: ZOO_SPEC's tower, tasks and test split size."""
    from taskarith_core.io import save_state_dict
    from taskarith_core.models.clip import create_clip, register_arch, visual_state
    from taskarith_core.models.files import FileSource
    from taskarith_core.zoo.arch import model_config
    from taskarith_core.zoo.build import ZOO_SPEC

    spec = ZOO_SPEC
    cfg = model_config(600, spec.width, spec.layers, spec.text_width, spec.embed_dim)
    arch = register_arch(cfg, "taskarith-zoo-bench")
    torch.manual_seed(0)
    model = create_clip(arch)
    save_state_dict(model.state_dict(), folder / "pretrained.safetensors")
    pre = visual_state(model)
    tasks = list(spec.data.tasks)
    files = {}
    for task in tasks:
        ft = {k: v + 0.01 * torch.randn_like(v) for k, v in pre.items()}
        files[task] = save_state_dict(ft, folder / f"{task}.safetensors")
    sizes = spec.data.sizes
    size = cfg["vision_cfg"]["image_size"]
    data = {
        (t, s): TensorDataset(torch.randn(n, 3, size, size), torch.randint(0, 10, (n,)))
        for t in tasks
        for s, n in sizes.items()
    }
    heads = {t: F.normalize(torch.randn(10, spec.embed_dim), dim=-1) * 100 for t in tasks}
    source = FileSource(
        name="synthetic-zoo",
        arch=arch,
        pretrained=folder / "pretrained.safetensors",
        finetuned=files,
        classnames={t: [str(i) for i in range(10)] for t in tasks},
        data=lambda task, split: data[(task, split)],
        heads=heads,
    )
    return source, f"synthetic zoo-shaped model (width {spec.width}, {spec.layers} layers)"


def _open(args):
    from taskarith_core.errors import InputError
    from taskarith_core.zoo import load_zoo

    try:
        source = load_zoo(args.paradigm, root=args.zoo_root)
        return source, source.name
    except InputError as exc:
        print(f"zoo not available ({exc}); timing a synthetic stand-in", file=sys.stderr)
        return _synthetic_source(Path(tempfile.mkdtemp(prefix="eval_speed_")))


def _edited(pre, finetuned, lam):
    return {k: v + lam * sum(ft[k] - v for ft in finetuned) for k, v in pre.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paradigm", default="full")
    parser.add_argument("--zoo-root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=None, help="test images per task")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from taskarith_core.device import pick_device
    from taskarith_core.models.evaluation import evaluate_states, split_tensors
    from taskarith_core.models.importance import fisher_importance, lp_importance

    device = pick_device(args.device)
    start = time.perf_counter()
    import open_clip  # noqa: F401  (seconds on its own: timed apart from opening the source)

    import taskarith_core.zoo  # noqa: F401

    t_import = time.perf_counter() - start
    start = time.perf_counter()
    source, what = _open(args)
    pre = source.load_pretrained()
    finetuned = [source.load_finetuned(t) for t in source.tasks]
    t_open = time.perf_counter() - start

    start = time.perf_counter()
    edited = {"ta": _edited(pre, finetuned, 0.3)}
    first = evaluate_states(source, edited, device=device, max_samples=args.max_samples)
    t_first = time.perf_counter() - start
    warm = []
    for i in range(args.repeats):
        state = _edited(pre, finetuned, 0.2 + 0.05 * i)
        start = time.perf_counter()
        evaluate_states(source, {"ta": state}, device=device, max_samples=args.max_samples)
        warm.append(time.perf_counter() - start)
    images = sum(
        min(len(source.dataset(t, "test")), args.max_samples or 10**9) for t in source.tasks
    )

    task = source.tasks[0]
    start = time.perf_counter()
    split_tensors(source, task, "train", max_samples=args.samples)
    t_train = time.perf_counter() - start
    start = time.perf_counter()
    lp_importance(source, task, finetuned[0], samples=args.samples, device=device)
    t_lp = time.perf_counter() - start
    start = time.perf_counter()
    fisher_importance(source, task, pre, samples=args.samples, device=device)
    t_fisher = time.perf_counter() - start

    print(f"source: {what}; device {device}; torch threads {args.threads}")
    print(f"tasks: {len(source.tasks)}, test images: {images}")
    print(f"import open_clip + taskarith_core.zoo: {t_import:.3f} s")
    print(f"open source + load {1 + len(finetuned)} checkpoints: {t_open:.3f} s")
    print(f"first evaluation (loads data, heads, tower): {t_first:.3f} s")
    print(f"edited model on every task, median of {args.repeats}: {statistics.median(warm):.3f} s")
    print(
        f"  ({images / statistics.median(warm):.0f} images/s; mean accuracy "
        f"{first['accuracy'].mean():.3f})"
    )
    print(f"Ns={args.samples} training samples of one task (first access): {t_train:.3f} s")
    print(f"lp importance, Ns={args.samples}, one task: {t_lp:.3f} s")
    print(f"fisher importance, Ns={args.samples}, one task: {t_fisher:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
