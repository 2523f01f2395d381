"""The largest request each setting accepts, in one place, and the checks that enforce them.

A value beyond these is refused at once, before anything is computed, with the limit in the
sentence: an ``xi`` grid of 5000 x 5000 points or a sweep over thousands of values would run for
days. The limits are far above what the papers use (15 or 20 grid points, a dozen sweep values,
Ns = 32 samples), so nobody meets them on purpose; the README lists them.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InputError, quote

__all__ = [
    "COEFFICIENT",
    "CONFIG_VERSION",
    "EVAL_IMAGES",
    "LIST_VALUES",
    "SAMPLES",
    "SEED",
    "SUBSETS",
    "THREADS",
    "XI_POINTS",
    "check_float",
    "check_int",
    "parse_float",
    "parse_int",
]

#: grid points per axis of the disentanglement error xi (the papers: 15 and 20)
XI_POINTS = 50
#: values in one sweep, task counts in one scaling run, Ns values in one stability run
LIST_VALUES = 100
#: samples per task for importance (Ns) and for xi (the papers: 32 and 256)
SAMPLES = 10_000
#: evaluation images per task and split (--max-samples); the benchmark's largest split is smaller
EVAL_IMAGES = 1_000_000
#: size of a coefficient: lambda, the xi alpha range, the localisation coefficient
COEFFICIENT = 100.0
#: random task subsets per task count in a scaling run
SUBSETS = 100
#: seeds are whole numbers in [0, SEED]
SEED = 2**32 - 1
#: torch CPU threads and xi worker threads
THREADS = 256
#: the run-config format this explorer writes (it also reads version 1 and converts it)
CONFIG_VERSION = 2


def check_int(name: str, value: Any, low: int, high: int, echo: bool = True) -> int:
    """``value`` as a whole number in [low, high], or one sentence naming ``name`` and the range.

    ``echo=False`` for a value read from a file: the sentence then does not repeat it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name} must be a whole number in [{low}, {high}]")
    if not math.isfinite(value) or value != int(value):
        raise InputError(f"{name} must be a whole number in [{low}, {high}]")
    value = int(value)
    shown = f"{name}={value}" if echo else name
    if value > high:
        raise InputError(f"{shown} is more than the limit {high}; use at most {high}")
    if value < low:
        raise InputError(f"{shown} is less than {low}; use at least {low}")
    return value


def check_float(
    name: str, value: Any, low: float, high: float, high_open: bool = False, echo: bool = True
) -> float:
    """``value`` as a finite number in [low, high] (or [low, high)), else one sentence."""
    bracket = f"[{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number in {bracket}")
    value = float(value)
    if value < low or value > high or (high_open and value == high):
        shown = f"{name}={value:g}" if echo else name
        raise InputError(f"{shown} is outside {bracket}; choose a value inside")
    return value


def parse_int(name: str, text: str, low: int, high: int) -> int:
    """A whole number typed by the user (flag or list item), checked against [low, high]."""
    try:
        value = int(text)
    except ValueError:
        raise InputError(
            f"{name}={quote(text)} is not a whole number; use one in [{low}, {high}]"
        ) from None
    return check_int(name, value, low, high)


def parse_float(name: str, text: str, low: float, high: float, high_open: bool = False) -> float:
    """A number typed by the user, checked to be finite and inside [low, high]."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name}={quote(text)} is not a number") from None
    return check_float(name, value, low, high, high_open)
