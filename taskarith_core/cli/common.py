"""Argument helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

__all__ = [
    "add_device_flag",
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
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
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
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
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
