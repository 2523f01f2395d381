"""``importance`` and ``evaluate``: the model-aware commands (they need a model source with data).

The source is the embedded zoo (``--source zoo:full|attention|talos``, ``--zoo-root`` for another
zoo folder) or a manifest (``--manifest M.yaml``). Every mistake (unknown task, Ns < 1, a checkpoint
of another architecture) is one ``error:`` line with exit code 2 and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import (
    IMAGES_FLAG,
    SAMPLES_FLAG,
    SEED_FLAG,
    THREADS_FLAG,
    add_device_flag,
    tqdm_progress,
)

__all__ = ["open_model_source", "register"]


def open_model_source(args: argparse.Namespace) -> Any:
    """The zoo paradigm or the manifest the flags name."""
    if args.manifest:
        from ..real.source import load_manifest_source

        return load_manifest_source(args.manifest)
    kind, _, paradigm = args.source.partition(":")
    if kind != "zoo":
        raise InputError(f"--source {args.source!r}: use zoo:full, zoo:attention or zoo:talos")
    from ..zoo import load_zoo

    return load_zoo(paradigm or "full", root=Path(args.zoo_root) if args.zoo_root else None)


def _tasks(source: Any, text: str) -> list[str]:
    if text == "all":
        return list(source.tasks)
    names = [t.strip() for t in text.split(",") if t.strip()]
    known = list(source.tasks) + ([source.control_task] if source.control_task else [])
    for name in names:
        if name not in known:
            raise InputError(f"unknown task {name!r} in {source.name}; choose from {known} or all")
    if not names:
        raise InputError("--tasks is empty; give task names separated by commas, or all")
    return names


def _run_importance(args: argparse.Namespace) -> int:
    import torch

    from ..device import pick_device
    from ..io import check_writable, save_state_dict
    from ..models.importance import cached_importance

    if args.samples < 1:
        raise InputError(f"--samples {args.samples}: Ns must be at least 1 (the paper uses 32)")
    out = check_writable(args.out)
    torch.set_num_threads(max(1, args.threads))
    source = open_model_source(args)
    _tasks(source, args.task)
    values = cached_importance(
        source,
        args.task,
        args.metric,
        args.samples,
        args.seed,
        pick_device(args.device),
        cache_dir=args.cache_dir,
        model_path=args.model,
        trust_pickle=args.trust_pickle,
    )
    meta = {
        "metric": args.metric,
        "task": args.task,
        "samples": str(args.samples),
        "seed": str(args.seed),
        "model": str(args.model or "source default"),
    }
    save_state_dict(values, out, meta)
    print(f"wrote {out}: {args.metric} importance of {len(values)} tensors on task {args.task}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..device import pick_device
    from ..io import atomic_path, check_writable
    from ..models.evaluation import add_normalised, evaluate_states, reference_accuracies
    from ..models.files import read_visual_state

    if args.out:
        check_writable(args.out)
    torch.set_num_threads(max(1, args.threads))
    source = open_model_source(args)
    tasks = _tasks(source, args.tasks)
    device = pick_device(args.device)
    state = read_visual_state(args.model, args.trust_pickle)
    frame = evaluate_states(
        source,
        {Path(args.model).name: state},
        tasks,
        args.split,
        device,
        args.max_samples,
        tqdm_progress("evaluate"),
        keep_correct=True,
    )
    hits = dict(zip(frame["task"], frame.pop("correct")))
    weights = None
    if args.normalised:
        refs = reference_accuracies(source, args.split, device, args.max_samples)
        frame = add_normalised(frame, refs)
        weights = {t: 1.0 / f for t, f in zip(refs["task"], refs["finetuned"]) if t in hits}
    if args.out:
        with atomic_path(args.out) as tmp:
            frame.to_csv(tmp, index=False)
    shown = frame.drop(columns=["model", "split"])
    sys.stdout.write(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}") + "\n")
    mean = shown.drop(columns=["task"]).mean(numeric_only=True)
    print("mean " + "  ".join(f"{k}={v:.4f}" for k, v in mean.items()))
    print(_intervals(hits, weights))
    return 0


def _intervals(hits: dict, weights: dict | None) -> str:
    """95% bootstrap intervals of the printed means, over the evaluated images."""
    from ..stats import bootstrap_mean

    text = f"95% interval: accuracy {bootstrap_mean(hits).ends(scale=1, digits=4)}"
    if weights is not None and set(weights) == set(hits):
        text += f"  normalised {bootstrap_mean(hits, weights).ends(scale=1, digits=4)}"
    return text + " (bootstrap over the evaluated images)"


def _source_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--source", default="zoo:full", help="zoo:full | zoo:attention | zoo:talos (default)"
    )
    where.add_argument("--manifest", metavar="M.yaml", help="real checkpoints named by a manifest")
    parser.add_argument("--zoo-root", metavar="DIR", help="another zoo folder (default: shipped)")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow a .pt/.bin --model (weights_only load)"
    )
    parser.add_argument(
        "--threads", type=THREADS_FLAG, default=1, help="torch CPU threads (default 1)"
    )
    add_device_flag(parser)


def register(subparsers: Any) -> None:
    imp = subparsers.add_parser(
        "importance",
        help="lp / fisher / lp_amp importance of a checkpoint on a task's training samples",
        description="STA lp (Eq. 12), lp_amp (Eq. 22) or TaLoS diagonal Fisher (Eq. 7), cached.",
    )
    imp.add_argument("--metric", required=True, choices=("lp", "lp_amp", "fisher"))
    imp.add_argument(
        "--model",
        metavar="M.safetensors",
        help="checkpoint to score (default: the source's theta_t for lp, theta_pre for fisher)",
    )
    imp.add_argument("--task", required=True, help="task whose training split gives the samples")
    imp.add_argument(
        "--samples", type=SAMPLES_FLAG, default=32, help="Ns, training samples (default 32)"
    )
    imp.add_argument(
        "--seed", type=SEED_FLAG, default=0, help="seed of the sample draw (default 0)"
    )
    imp.add_argument("--out", required=True, metavar="I.safetensors", help="output file")
    imp.add_argument("--cache-dir", metavar="DIR", help="cache folder (default $TASKARITH_CACHE)")
    _source_flags(imp)
    imp.set_defaults(func=_run_importance)

    ev = subparsers.add_parser(
        "evaluate",
        help="accuracy of an image tower on each task's test split",
        description="Accuracy of one checkpoint on every task with the frozen zero-shot heads.",
    )
    ev.add_argument("--model", required=True, metavar="M.safetensors", help="image tower")
    ev.add_argument("--tasks", default="all", metavar="A,B,...|all", help="tasks (default all)")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--max-samples", type=IMAGES_FLAG, metavar="N", help="images per task (all)")
    ev.add_argument(
        "--normalised", action="store_true", help="add accuracy / fine-tuned accuracy per task"
    )
    ev.add_argument("--out", metavar="RESULT.csv", help="also write the table as CSV")
    _source_flags(ev)
    ev.set_defaults(func=_run_evaluate)
