"""``run --config run.json``: reproduce what the page showed for a downloaded run config.

It calls the same service functions as the page (``taskarith_core.service.explorer.Explorer``) and
prints the same table with the same rounding, so the numbers match the page digit for digit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_executor_flags, tqdm_progress

__all__ = ["register", "run_config"]


def _config_unit(_context: Any, cfg: Any) -> Any:
    """The run as one unit (merge or negate, then evaluate), here or on a Ray worker."""
    from ..service.sources import explorer_for

    service = explorer_for(cfg)
    if cfg.action == "merge":
        return service.run_merge(cfg, tqdm_progress("merge"))
    return service.run_negation(cfg, tqdm_progress("negate"))


def run_config(
    config_path: str, out: str | None = None, device: str | None = None, executor: Any = None
):
    """Load a config, run it (on ``executor``, default here), return the table in percent (what
    ``run`` prints)."""
    from ..device import pick_device
    from ..executor import LOCAL, run_grid
    from ..io import atomic_path
    from ..numbers import mean_percent
    from ..runconfig import load_config
    from ..service.results import negation_percent, percent_table

    cfg = load_config(config_path)
    if device:
        cfg.device = device
    gpu = executor is not None and pick_device(cfg.device).type == "cuda"
    (raw,) = run_grid(executor or LOCAL, _config_unit, None, [cfg], keys=["run"], gpu=gpu)
    if cfg.action == "merge":
        table = percent_table(raw)
        # means of the unrounded accuracies, rounded once: the page's digits
        table.attrs["means"] = (mean_percent(raw["merged"]), mean_percent(raw["normalised"]))
    else:
        table = negation_percent(raw)
    if out:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
    return cfg, table


def _wants_cuda(args: argparse.Namespace) -> bool:
    """Whether the run will use CUDA (the config's device unless --device overrides it)."""
    from ..device import pick_device
    from ..runconfig import load_config

    return pick_device(args.device or load_config(args.config).device).type == "cuda"


def _references(cfg) -> tuple[str, str]:
    """(95% intervals of the run's two means, the references table) as printed."""
    from ..analyses.references import references_table, run_references
    from ..service.sources import explorer_for

    refs = run_references(explorer_for(cfg), cfg, tqdm_progress("references"))
    table = references_table(refs)
    run = table.iloc[0]
    intervals = (
        f"95% intervals: merged {run['95% interval']}, normalised "
        f"{run['normalised 95% interval']} (bootstrap over the evaluated images)"
    )
    return intervals, table.to_string(index=False)


def _run(args: argparse.Namespace) -> int:
    from ..executor import open_executor, parse_executor

    spec = parse_executor(args.executor, args.shared_dir)
    with open_executor(spec, gpu=spec.kind == "ray" and _wants_cuda(args)) as executor:
        cfg, table = run_config(args.config, args.out, args.device, executor)
    sys.stdout.write(table.to_string(index=False) + "\n")
    if cfg.action == "merge":
        merged, normalised = table.attrs["means"]
        sys.stdout.write(f"mean merged {merged:.2f}  mean normalised {normalised:.2f}\n")
        if not args.no_references:
            intervals, references = _references(cfg)
            sys.stdout.write(
                f"{intervals}\n\nReferences on the same images (run minus reference in "
                f"normalised points; verdict on 'the run is better'):\n{references}\n"
            )
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="reproduce a page run from its run config (JSON)",
        description="Re-run a merge or forgetting run recorded by the page's run config and "
        "print per-task accuracies in percent, as the page shows them.",
    )
    parser.add_argument(
        "--config",
        required=True,
        metavar="RUN.json",
        help="run config downloaded from the page (or written by hand)",
    )
    parser.add_argument("--out", metavar="RESULTS.csv", help="also write the table as CSV")
    parser.add_argument(
        "--device", default=None, help="override the config's device (cpu, cuda, cuda:N, mps, auto)"
    )
    parser.add_argument(
        "--no-references",
        action="store_true",
        help="skip the references (zero-shot, fine-tuned, task arithmetic with lambda chosen on "
        "val, random importance) and the intervals; their first computation takes a while",
    )
    add_executor_flags(parser, resume=False)
    parser.set_defaults(func=_run)
