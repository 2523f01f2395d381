"""``analyse xi|kernel|cosine|iou|localisation|rates|sweep|negation-sweep|scaling|stability``.

Each subcommand runs one :mod:`taskarith_core.analyses` function on a model source (the embedded
zoo, another zoo folder or a manifest), writes ``<name>.csv`` and an interactive, self-contained
``<name>.html`` into ``--out DIR`` (temp file + rename, only after the analysis succeeded) and
prints a one-screen summary. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from ..analyses.reports import REPORTS, Result
from ..errors import InputError
from .analyse_flags import add_flags, check_analysis
from .common import add_executor_flags, grid_journal, tqdm_progress

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


# ----------------------------------------------------------------------------- parser

_HELP = {
    "xi": "disentanglement error xi(alpha1, alpha2) of two task vectors (attention-only "
    "paper, Eq. 2)",
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

    check_analysis(args)
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
GRID_ANALYSES = ("sweep", "negation-sweep", "xi", "scaling", "stability")


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


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyse",
        help="analyses of task vectors and merges: CSV + interactive HTML",
        description="Run one analysis and write <name>.csv and <name>.html into --out.",
    )
    inner = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, compute in REPORTS.items():
        sub = inner.add_parser(name, help=_HELP[name].replace("%", "%%"), description=_HELP[name])
        add_flags(name, sub)
        if name in GRID_ANALYSES:
            add_executor_flags(sub)
        sub.set_defaults(func=_run, compute=compute)
