"""``zoo build`` (re-create the embedded zoo from nothing) and ``zoo info`` (print its card)."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, quote
from .common import THREADS_FLAG, add_device_flag, tqdm_progress

__all__ = ["register"]


def _paradigm_list(text: str) -> list[str]:
    from ..zoo import PARADIGMS

    chosen = [p for p in text.split(",") if p]
    unknown = [p for p in chosen if p not in PARADIGMS]
    if unknown or not chosen:
        raise InputError(
            f"unknown paradigm {quote(text)}: use a comma-separated subset of "
            f"{', '.join(PARADIGMS)}"
        )
    return chosen


def _run_build(args: argparse.Namespace) -> int:
    import torch

    from ..device import pick_device
    from ..zoo import MINI_SPEC, ZOO_ROOT, ZOO_SPEC, build_zoo

    out = Path(args.out) if args.out else ZOO_ROOT
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give a folder for --out")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: folder does not exist; create it first")
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    staging = out.with_name(f".{out.name}.building")  # kept on failure: the next build resumes
    if args.fresh:
        shutil.rmtree(staging, ignore_errors=True)
    spec = MINI_SPEC if args.mini else ZOO_SPEC
    train_only = None
    if args.paradigms:  # fine-tune these into the existing zoo; its other paradigms stay
        train_only = tuple(_paradigm_list(args.paradigms))
        spec = replace(spec, paradigms=tuple(dict.fromkeys([*spec.paradigms, *train_only])))
        if out.is_dir() and not staging.exists():
            shutil.copytree(out, staging)
    build_zoo(staging, spec, tqdm_progress("zoo build"), device, train_only=train_only)
    if not args.no_card:
        from ..zoo.card import write_card

        write_card(staging, tqdm_progress("zoo card"), device, quick=args.mini)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"zoo written to {out}")
    return 0


def _run_card(args: argparse.Namespace) -> int:
    import torch

    from ..device import pick_device
    from ..zoo import ZOO_ROOT
    from ..zoo.card import write_card

    root = Path(args.root) if args.root else ZOO_ROOT
    paradigms = _paradigm_list(args.paradigms) if args.paradigms else None
    torch.set_num_threads(args.threads)
    write_card(root, tqdm_progress("zoo card"), pick_device(args.device), paradigms=paradigms)
    print(f"card written to {root / 'card.json'}")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from ..zoo import ZOO_ROOT
    from ..zoo.source import BUILD_HINT

    root = Path(args.root) if args.root else ZOO_ROOT
    readme, card = root / "README.md", root / "card.json"
    if not card.is_file():
        raise InputError(f"{card}: zoo card missing; {BUILD_HINT}")
    if args.json:
        print(json.dumps(json.loads(card.read_text()), indent=1))
    elif readme.is_file():
        print(readme.read_text())
    else:
        print(card.read_text())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    zoo = subparsers.add_parser(
        "zoo", help="build the embedded model zoo, measure or print its card"
    )
    sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ACTION")
    build = sub.add_parser("build", help="re-create assets/zoo from nothing (training on CPU)")
    build.add_argument("--out", help="output folder (default: the shipped assets/zoo)")
    build.add_argument("--mini", action="store_true", help="the 2-task miniature zoo of the tests")
    build.add_argument("--no-card", action="store_true", help="skip measuring the card")
    build.add_argument(
        "--paradigms",
        help="fine-tune only these (comma-separated) into the existing zoo (default: all)",
    )
    build.add_argument(
        "--fresh", action="store_true", help="discard an interrupted build instead of resuming it"
    )
    build.add_argument(
        "--threads",
        type=THREADS_FLAG,
        default=1,
        help="torch CPU threads (1 is fastest when other processes share the cores)",
    )
    add_device_flag(build)
    build.set_defaults(func=_run_build)
    card = sub.add_parser("card", help="re-measure the card of a built zoo (no training)")
    card.add_argument("--root", help="zoo folder (default: the shipped assets/zoo)")
    card.add_argument("--paradigms", help="comma-separated subset to re-measure (default: all)")
    card.add_argument("--threads", type=THREADS_FLAG, default=1, help="torch CPU threads")
    add_device_flag(card)
    card.set_defaults(func=_run_card)
    info = sub.add_parser("info", help="print the zoo's card of measured numbers")
    info.add_argument("--root", help="zoo folder (default: the shipped assets/zoo)")
    info.add_argument("--json", action="store_true", help="print card.json instead of the table")
    info.set_defaults(func=_run_info)
