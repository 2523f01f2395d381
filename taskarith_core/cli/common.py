"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from ..errors import InputError, quote
from ..limits import EVAL_IMAGES, SAMPLES, SEED, THREADS, parse_float, parse_int

__all__ = [
    "IMAGES_FLAG",
    "SAMPLES_FLAG",
    "SEED_FLAG",
    "THREADS_FLAG",
    "add_device_flag",
    "as_flag",
    "add_executor_flags",
    "grid_journal",
    "float_flag",
    "float_list_flag",
    "int_flag",
    "int_list_flag",
    "positive_int",
    "tqdm_progress",
    "unit_interval",
    "unit_interval_open",
]


def _float_in(lo: float, hi: float, hi_open: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{quote(text)} is not a number") from exc
        ok = lo <= value < hi if hi_open else lo <= value <= hi
        if not ok:
            bracket = ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}{bracket}")
        return value

    return parse


unit_interval = _float_in(0.0, 1.0, hi_open=False)
unit_interval_open = _float_in(0.0, 1.0, hi_open=True)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (sample counts, threads, steps)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{quote(text)} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is too few; use at least 1")
    return value


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"
    )


def tqdm_progress(desc: str) -> Callable[..., Any]:
    """A progress callback ``(done, total, message)`` that draws a tqdm bar on stderr."""
    bar: dict[str, tqdm] = {}

    def update(done: int, total: int, message: str = "") -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, unit="step", leave=False)
        b = bar["bar"]
        b.total = total
        b.n = done
        if message:
            b.set_postfix_str(message, refresh=False)
        b.refresh()
        if done >= total:
            b.close()

    return update


def add_executor_flags(parser: argparse.ArgumentParser, resume: bool = True) -> None:
    """``--executor``, ``--shared-dir`` and (for grids) ``--resume``."""
    parser.add_argument(
        "--executor",
        default="local",
        metavar="local|ray[:ADDRESS]",
        help="where grid points run: local (this process), ray (a Ray instance started here), "
        "ray:auto or ray:HOST:PORT (a running Ray cluster)",
    )
    parser.add_argument(
        "--shared-dir",
        metavar="DIR",
        help="with ray: pass weights to workers as files in DIR (a folder every node sees) "
        "instead of through Ray's object store",
    )
    if not resume:
        return
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the grid points an interrupted run already wrote, continue with the rest",
    )


#: Flags that change where or how a grid runs, not what it computes.
_RUN_ONLY = {"executor", "shared_dir", "resume", "threads", "func", "compute", "workers"}


def grid_journal(args: argparse.Namespace, folder: Any, name: str) -> Any:
    """The journal of finished grid points for this command in ``folder``, keyed by every flag
    that changes the results (so --resume never mixes runs with other settings)."""
    from pathlib import Path

    from ..analyses._common import cache_key
    from ..executor import Journal

    fields = {k: v for k, v in sorted(vars(args).items()) if k not in _RUN_ONLY}
    path = Path(folder) / f".{name}.rows.jsonl"
    return Journal(path, cache_key(name, fields), resume=bool(getattr(args, "resume", False)))


def as_flag(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a checker that raises InputError (argparse then names the flag)."""

    def flag(text: str) -> Any:
        try:
            return parse(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return flag


def int_flag(name: str, low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high] (``high`` usually from :mod:`..limits`)."""
    return as_flag(lambda text: parse_int(name, text, low, high))


def float_flag(
    name: str, low: float, high: float, high_open: bool = False
) -> Callable[[str], float]:
    """argparse type: a finite number in [low, high] or [low, high)."""
    return as_flag(lambda text: parse_float(name, text, low, high, high_open))


def _items(name: str, text: str, most: int) -> list[str]:
    items = [v for v in text.split(",") if v.strip()]
    if not items:
        raise InputError(f"{name}={quote(text)} holds no value; give e.g. 0.1,0.2,0.3")
    if len(items) > most:
        raise InputError(f"{name} has {len(items)} values, more than the limit {most}")
    return items


def float_list_flag(name: str, low: float, high: float, most: int) -> Callable[[str], list]:
    """argparse type: comma-separated finite numbers in [low, high], at most ``most`` of them."""
    return as_flag(lambda text: [parse_float(name, v, low, high) for v in _items(name, text, most)])


def int_list_flag(name: str, low: int, high: int, most: int) -> Callable[[str], list]:
    """argparse type: comma-separated whole numbers in [low, high], at most ``most`` of them."""
    return as_flag(lambda text: [parse_int(name, v, low, high) for v in _items(name, text, most)])


#: the flags every command shares, bounded by :mod:`taskarith_core.limits`
THREADS_FLAG = int_flag("threads", 1, THREADS)
SEED_FLAG = int_flag("seed", 0, SEED)
SAMPLES_FLAG = int_flag("samples", 1, SAMPLES)
IMAGES_FLAG = int_flag("max-samples", 1, EVAL_IMAGES)
