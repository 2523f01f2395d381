"""``analyse xi|kernel|cosine|iou|localisation|rates|sweep|negation-sweep|scaling|stability``.

Each subcommand runs one :mod:`taskarith_core.analyses` function on a model source (the embedded
zoo, another zoo folder or a manifest), writes ``<name>.csv`` and an interactive, self-contained
``<name>.html`` into ``--out DIR`` (temp file + rename, only after the analysis succeeded) and
prints a one-screen summary. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from pathlib import Path
from typing import Any

from ..analyses.reports import REPORTS, Result
from ..errors import InputError
from .common import add_device_flag, add_executor_flags, grid_journal, tqdm_progress

__all__ = ["open_source", "register"]


def open_source(args: argparse.Namespace) -> Any:
    """The zoo paradigm (or another zoo folder) or the manifest the flags name."""
    if args.manifest:
        from ..real.source import load_manifest_source

        return load_manifest_source(args.manifest, trust_pickle=bool(args.trust_pickle))
    from ..zoo import load_zoo

    return load_zoo(args.paradigm, root=Path(args.zoo_root) if args.zoo_root else None)


def _check_out(out: str) -> Path:
    """Refuse an unusable output folder before any work is done (missing folders are made later,
    when there is something to write)."""
    from ..io import check_writable

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a folder; give a folder")
    check_writable(path / "report.csv")
    return path


def _write(out: Path, name: str, result: Result) -> list[Path]:
    from ..io import atomic_path, make_folder

    make_folder(out)
    written = []
    for stem, frame in result.frames.items():
        with atomic_path(out / f"{stem}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        written.append(out / f"{stem}.csv")
    for stem, fig in {name: result.figure, **result.extra_figures}.items():
        with atomic_path(out / f"{stem}.html") as tmp:
            fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
        written.append(out / f"{stem}.html")
    return written


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from exc
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give finite numbers, e.g. 0.1,0.2,0.3")
    return values


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from exc


# ----------------------------------------------------------------------------- parser

_HELP = {
    "xi": "disentanglement error xi(alpha1, alpha2) of two task vectors (seed 002 Eq. 2)",
    "kernel": "post-hoc linearised vs non-linear accuracy per task (kernel-behaviour test)",
    "cosine": "cosine similarity between task vectors, whole / per block / per kind",
    "iou": "mask IoU between tasks (STA masks at p, or the TaLoS masks)",
    "rates": "per-layer selection rate of the masks, split by kind",
    "localisation": "accuracy of theta_pre + tau_i on every task j (TaLoS Fig. 3)",
    "sweep": "accuracy against a method's parameter (p, lambda, k)",
    "negation-sweep": "target and control accuracy against lambda / p, best under the 95% rule",
    "scaling": "mean normalised accuracy against the number of merged tasks",
    "stability": "STA mask IoU and merged accuracy against the importance sample count Ns",
}


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..device import pick_device

    out = _check_out(args.out)
    torch.set_num_threads(max(1, args.threads))
    if getattr(args, "paradigms", None):
        source = [
            open_source(argparse.Namespace(**{**vars(args), "paradigm": p}))
            for p in args.paradigms.split(",")
        ]
    else:
        source = open_source(args)
    device = pick_device(args.device)
    name = args.analysis.replace("-", "_")
    with _grid_executor(args, out, name, device) as journal:
        result = REPORTS[args.analysis](args, source, device, tqdm_progress(args.analysis))
        written = _write(out, name, result)
        if journal is not None:
            journal.finish()
    print(result.summary)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


#: Analyses whose grid points can run on another executor (Ray) and resume.
GRID_ANALYSES = ("sweep", "negation-sweep", "xi")


@contextlib.contextmanager
def _grid_executor(args: argparse.Namespace, out: Path, name: str, device: Any):
    """Open the executor --executor names (checked before any work) and the grid's journal;
    both reach the analysis as ``args.executor`` / ``args.journal``."""
    from ..executor import open_executor, parse_executor

    if args.analysis not in GRID_ANALYSES:
        yield None
        return
    spec = parse_executor(args.executor, args.shared_dir)
    journal = grid_journal(args, out, name)
    with open_executor(spec, gpu=device.type == "cuda") as executor:
        args.executor_obj, args.journal = executor, journal
        yield journal


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for CSV + HTML")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--manifest", metavar="M.yaml", help="real checkpoints named by a manifest")
    where.add_argument("--zoo-root", metavar="DIR", help="another zoo folder (default: shipped)")
    parser.add_argument(
        "--paradigm",
        default="full",
        choices=("full", "attention", "talos"),
        help="zoo fine-tuning paradigm (default full)",
    )
    parser.add_argument("--tasks", metavar="A,B,...", help="comma-separated tasks (default all)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--max-samples", type=int, metavar="N", help="evaluation images per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ns", type=int, default=32, help="samples for lp / fisher importance")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow .pt/.bin checkpoints you trust"
    )
    add_device_flag(parser)


def _mask_flags(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--masks",
        default=default,
        choices=("none", "sta", "talos", "fisher")
        if default == "none"
        else ("sta", "talos", "fisher"),
        help="STA crossmasking at --p, the TaLoS masks, or TaLoS-style post-hoc bottom-k Fisher "
        "masks at sparsity --k",
    )
    parser.add_argument("--k", type=float, default=0.9, help="sparsity of fisher masks (0.9)")
    parser.add_argument("--metric", default="lp", help="STA importance metric (default lp)")
    parser.add_argument("--p", type=float, default=0.7, help="STA quantile p (default 0.7)")


def _add_specific(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "xi":
        parser.add_argument(
            "--preset",
            default="ortiz",
            choices=("ortiz", "talos"),
            help="ortiz: 15x15 on [-2,2]^2 (seed 002); talos: 20x20 on [-3,3]^2",
        )
        parser.add_argument("--points", type=int, help="grid points per axis (overrides preset)")
        parser.add_argument("--alpha-range", type=float, nargs=2, metavar=("LO", "HI"))
        parser.add_argument("--distance", default="prediction", choices=("prediction", "kl"))
        parser.add_argument("--samples", type=int, default=256, help="samples per task")
        parser.add_argument("--threshold", type=float, default=0.1, help="xi level for the area")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="grid rows in parallel threads (e.g. 2 with --threads 1 on a 2-core CPU)",
        )
        parser.add_argument(
            "--finetuned",
            metavar="A,B",
            help="two fine-tuned checkpoints to use instead of the "
            "source's (image tower or whole CLIP, .safetensors)",
        )
        _mask_flags(parser, "none")
    elif name == "kernel":
        parser.add_argument(
            "--paradigms",
            metavar="full,attention,talos",
            help="zoo paradigms to overlay (default: --paradigm only)",
        )
    elif name in ("cosine", "localisation"):
        _mask_flags(parser, "none")
        if name == "cosine":
            parser.add_argument("--by", default="kind", choices=("whole", "block", "kind"))
        else:
            parser.add_argument("--coefficient", type=float, default=1.0)
            parser.add_argument(
                "--normalise", default="finetuned", choices=("finetuned", "zeroshot", "none")
            )
    elif name in ("iou", "rates"):
        _mask_flags(parser, "sta")
        if name == "iou":
            parser.add_argument("--by", default="whole", choices=("whole", "block", "kind"))
        else:
            parser.add_argument("--level", default="block", choices=("block", "tensor"))
    elif name in ("sweep", "negation-sweep"):
        parser.add_argument(
            "--method",
            required=True,
            help="ta, ties, dare, consensus, "
            "sta-lp, sta-amp, sta-lpamp, sta-random, talos-mask, fisher-mask",
        )
        parser.add_argument("--values", type=_floats, help="comma-separated (default: the grid)")
        if name == "sweep":
            parser.add_argument("--param", help="parameter to sweep (default: the tuned one)")
            parser.add_argument("--show", default="normalised", choices=("normalised", "accuracy"))
    elif name == "scaling":
        parser.add_argument("--methods", required=True, metavar="ta=0.3,sta-lp=0.7")
        parser.add_argument("--counts", type=_ints, help="task counts N (default 2..all)")
        parser.add_argument("--subsets", type=int, default=5, help="subsets per N (seeded)")
    elif name == "stability":
        parser.add_argument("--metric", default="lp")
        parser.add_argument("--ns-values", type=_ints, default=[8, 16, 32, 64])
        parser.add_argument("--p", type=float, default=0.7)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyse",
        help="analyses of task vectors and merges: CSV + interactive HTML",
        description="Run one analysis and write <name>.csv and <name>.html into --out.",
    )
    inner = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, compute in REPORTS.items():
        sub = inner.add_parser(name, help=_HELP[name].replace("%", "%%"), description=_HELP[name])
        _common(sub)
        _add_specific(name, sub)
        if name in GRID_ANALYSES:
            add_executor_flags(sub)
        sub.set_defaults(func=_run, compute=compute)
