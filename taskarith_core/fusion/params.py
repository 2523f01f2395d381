"""A method's hyperparameter as data: name, kind, range, default, the paper's symbol and help.

Every place that shows or checks a hyperparameter (CLI flags and their help, run-config fields,
the page's controls, validation) reads it from one :class:`Param`, so a method declares each
parameter once and nothing restates its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, quote

__all__ = ["Param", "scaling"]

_KINDS = ("float", "int", "choice", "bool")


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a method.

    ``low``/``high`` bound a number (``None`` = unbounded on that side); ``low_open`` /
    ``high_open`` make a bound strict. ``symbol`` is the paper's name for it (shown beside the
    control and in ``--help``); ``help`` is one line that says what it does.
    """

    name: str
    kind: str
    default: Any
    help: str
    symbol: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    #: a step for the page's slider (None: the page picks one from the range)
    step: float | None = None
    #: the value may also be a list with one value per task (each checked alike)
    per_task: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Param {self.name}: kind must be one of {_KINDS}")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"Param {self.name}: default not among its choices")

    @property
    def flag(self) -> str:
        """The command-line flag: ``drop_rate`` -> ``--drop-rate``."""
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        """The allowed values in words, for help texts and error messages."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.low is None and self.high is None:
            return "any finite number" if self.kind == "float" else "any whole number"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        whole = "a whole number in " if self.kind == "int" else ""
        return f"{whole}{left}{low}, {high}{right}"

    def check(self, value: Any, owner: str = "", echo: bool = True) -> Any:
        """The value converted to this parameter's kind, or an InputError naming the range.

        ``echo=False`` for a value read from a file: the sentence then does not repeat it."""
        where = f"{owner} " if owner else ""
        shown = f"{where}{self.name}={quote(value)}" if echo else f"{where}{self.name}"
        if self.kind == "choice":
            if value not in self.choices:
                raise InputError(f"{shown} is not {self.range_text()}; pick one of those")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"{shown} must be true or false")
            return value
        number = _as_number(value, self.kind == "int")
        if number is None:
            kind = "a whole number" if self.kind == "int" else "a finite number"
            raise InputError(f"{shown} is not {kind}; use {self.range_text()}")
        if not self._in_range(number):
            shown = f"{where}{self.name}={_num(number)}" if echo else f"{where}{self.name}"
            raise InputError(f"{shown} is outside {self.range_text()}; choose a value inside")
        return number

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def scaling(default: float) -> Param:
    """The scaling coefficient lambda of a method's summed (or selected) task vectors."""
    return Param("lam", "float", default, "scaling coefficient of the task vectors", symbol="λ")


def _as_number(value: Any, whole: bool) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(float(value)):
        return None
    if whole:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _num(value: float) -> str:
    return f"{value:g}"
