"""``convert`` and ``reproduce``: real checkpoints to open_clip safetensors, and the papers tables.

``convert CKPT --arch ViT-B-32 --out tower.safetensors`` converts one file (open_clip, transformers
CLIP, or with --trust-pickle a task-vectors ``ImageEncoder`` pickle); ``convert --manifest M.yaml``
converts every checkpoint of a manifest into its cache and builds the zero-shot heads.
``reproduce --manifest M.yaml --protocol addition --methods ta,ties,sta-lp`` runs the papers'
protocol and prints our numbers beside the published ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..analyses.methods import METHODS
from ..errors import InputError
from ..executor import open_executor
from ..io import atomic_path, check_writable
from .common import (
    IMAGES_FLAG,
    SAMPLES_FLAG,
    SEED_FLAG,
    THREADS_FLAG,
    add_device_flag,
    add_executor_flags,
    grid_journal,
    tqdm_progress,
)

__all__ = ["register"]

DEFAULT_METHODS = "ta,ties,sta-lp,sta-amp,sta-lpamp,consensus,talos-mask"


def _manifest_source(path: str, trust_pickle: bool) -> Any:
    from ..real.source import load_manifest_source

    return load_manifest_source(path, tqdm_progress("convert"), trust_pickle=trust_pickle)


def _convert(args: argparse.Namespace) -> int:
    from ..device import pick_device

    torch.set_num_threads(max(1, args.threads))
    if args.manifest:
        if args.checkpoint or args.out:
            raise InputError("convert: give either --manifest or CHECKPOINT --arch --out, not both")
        source = _manifest_source(args.manifest, args.trust_pickle)
        source.prepare(pick_device(args.device))
        print(f"converted {len(source.tasks)} fine-tuned checkpoints and the pretrained model")
        print(f"cache: {source.pretrained_path().parent}")
        return 0
    if not (args.checkpoint and args.arch and args.out):
        raise InputError("convert: give CHECKPOINT --arch NAME --out FILE (or --manifest M.yaml)")
    from ..io import load_state_dict
    from ..real.convert import convert_checkpoint

    check_writable(args.out)
    if args.arch_config:
        from ..models.clip import register_arch

        register_arch(args.arch_config, args.arch)
    fill = None
    if args.projection_from:
        fill = load_state_dict(args.projection_from, prefix="visual.proj")
    out = convert_checkpoint(
        args.checkpoint,
        args.arch,
        args.out,
        visual_only=not args.full,
        fmt=args.format,
        trust_pickle=args.trust_pickle,
        fill=fill,
    )
    print(f"wrote {out}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from ..device import pick_device
    from ..real.reproduce import reproduce

    torch.set_num_threads(max(1, args.threads))
    if args.out:
        check_writable(args.out)
    if args.manifest:
        source = _manifest_source(args.manifest, args.trust_pickle)
    else:
        from .model_cmds import open_model_source

        source = open_model_source(args)
    methods = _methods(args.methods, source, args.protocol)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    device = pick_device(args.device)
    spec, journal = _grid_flags(args)
    finished: list = []

    def show(name: str, rows: Any) -> None:
        finished.append(rows)
        sys.stdout.write(_method_line(name, rows) + "\n")
        sys.stdout.flush()

    with open_executor(spec, gpu=device.type == "cuda") as executor:
        try:
            _, table = reproduce(
                source,
                args.protocol,
                methods,
                tasks=tasks,
                device=device,
                max_samples=args.max_samples,
                samples=args.samples,
                seed=args.seed,
                progress=tqdm_progress(args.protocol),
                executor=executor,
                journal=journal,
                on_method=show,
            )
        except Exception:
            _keep_finished(finished, args.out)
            raise
    if args.out:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        if journal is not None:
            journal.finish()
    shown = table[table["task"] == "mean"] if not args.per_task else table
    shown = shown.drop(columns=["tasks"])
    sys.stdout.write(f"{source.name} ({source.arch}), tasks: {table['tasks'].iloc[0]}\n")
    sys.stdout.write(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}") + "\n")
    sys.stdout.write("published: taskarith_core/real/published.csv (paper, table, note)\n")
    return 0


def _grid_flags(args: argparse.Namespace):
    """The executor --executor names and, with --out, the journal of finished grid points kept
    beside it (--resume needs it)."""
    from ..executor import parse_executor

    spec = parse_executor(args.executor, args.shared_dir)
    if args.resume and not args.out:
        raise InputError("--resume continues the run that wrote --out; give the same --out")
    if not args.out:
        return spec, None
    return spec, grid_journal(args, Path(args.out).parent, f"{Path(args.out).name}.reproduce")


def _methods(text: str | None, source: Any, protocol: str) -> list[str]:
    """The methods named, or by default the paper's list without what this source cannot run
    (talos-mask without TaLoS masks; methods without a negation for the negation protocol)."""
    from ..real.reproduce import check_methods

    if text is not None:
        return [m.strip() for m in text.split(",") if m.strip()]
    methods = []
    for name in DEFAULT_METHODS.split(","):
        try:
            check_methods(source, protocol, [name])
        except InputError:
            continue
        methods.append(name)
    return methods


def _method_line(name: str, rows: Any) -> str:
    """One method's mean row, printed as soon as the method is done."""
    mean = rows[rows["task"] == "mean"].iloc[0]
    setting = (
        ""
        if mean["param"] is None or mean["param"] != mean["param"]
        else (f" ({mean['param']}={mean['value']:g})")
    )
    ours = [c for c in ("absolute", "normalised", "target", "control") if c in rows.columns]
    base = {"method", "param", "value", "task", *ours}
    published = [c for c in rows.columns if c not in base and isinstance(mean[c], float)]
    text = f"done: {name}{setting}: " + ", ".join(f"{c} {mean[c]:.2f}" for c in ours)
    shown = [f"{c} {mean[c]:.2f}" for c in published if mean[c] == mean[c]]
    return text + (f"  [published: {'; '.join(shown)}]" if shown else "")


def _keep_finished(finished: list, out: Any) -> None:
    """On a failure after some methods finished, their rows still reach --out (a whole table of
    the finished methods, written atomically)."""
    if not finished or not out:
        return
    import pandas as pd

    with atomic_path(out) as tmp:
        pd.concat(finished, ignore_index=True).to_csv(tmp, index=False)
    print(f"wrote the {len(finished)} finished methods to {out}", file=sys.stderr)


def register(subparsers: Any) -> None:
    conv = subparsers.add_parser(
        "convert",
        help="convert a checkpoint (open_clip / transformers / task-vectors pickle) to safetensors",
        description="Converted files use open_clip names with the visual. prefix, float32.",
    )
    conv.add_argument("checkpoint", nargs="?", help="file (or transformers save_pretrained folder)")
    conv.add_argument("--arch", help="open_clip architecture, e.g. ViT-B-32-quickgelu")
    conv.add_argument("--arch-config", metavar="JSON", help="open_clip config for a custom --arch")
    conv.add_argument("--out", help="output .safetensors")
    conv.add_argument("--format", default="auto", choices=["auto", "open_clip", "hf"])
    conv.add_argument("--full", action="store_true", help="keep the text tower too (pretrained)")
    conv.add_argument(
        "--projection-from", metavar="PRE", help="take visual.proj from this file if missing"
    )
    conv.add_argument("--manifest", metavar="M.yaml", help="convert everything a manifest names")
    conv.add_argument("--trust-pickle", action="store_true", help="allow .pt/.bin you trust")
    conv.add_argument("--threads", type=THREADS_FLAG, default=1, help="torch CPU threads (1)")
    add_device_flag(conv)
    conv.set_defaults(func=_convert)

    rep = subparsers.add_parser(
        "reproduce",
        help="the papers' addition / negation protocol with the published numbers beside",
        description="Hyperparameters chosen on validation, reported on test (see published.csv).",
    )
    where = rep.add_mutually_exclusive_group()
    where.add_argument("--manifest", metavar="M.yaml", help="real checkpoints named by a manifest")
    where.add_argument(
        "--source",
        default="zoo:full",
        help="zoo:PARADIGM (full, attention, talos, linearized, l-lora, lota)",
    )
    rep.add_argument("--zoo-root", metavar="DIR", help="another zoo folder (default: shipped)")
    rep.add_argument("--protocol", required=True, choices=["addition", "negation"])
    rep.add_argument(
        "--methods",
        help=f"comma-separated, from {', '.join(METHODS)} (default {DEFAULT_METHODS}, without "
        "those the source cannot run)",
    )
    rep.add_argument("--tasks", help="comma-separated subset of the source's tasks")
    rep.add_argument("--max-samples", type=IMAGES_FLAG, help="cap images per task and split")
    rep.add_argument("--samples", type=SAMPLES_FLAG, default=32, help="Ns for lp/fisher (32)")
    rep.add_argument("--seed", type=SEED_FLAG, default=0)
    rep.add_argument("--per-task", action="store_true", help="print every task, not only means")
    rep.add_argument("--out", type=Path, help="write the table (every task) as CSV")
    rep.add_argument("--trust-pickle", action="store_true", help="allow .pt/.bin you trust")
    rep.add_argument("--threads", type=THREADS_FLAG, default=1, help="torch CPU threads (1)")
    add_device_flag(rep)
    add_executor_flags(rep)
    rep.set_defaults(func=_reproduce)
