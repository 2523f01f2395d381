"""One number format for the whole page and the CLI: accuracies as percent with two decimals.

Every table, chart hover and sentence that shows an accuracy goes through these helpers, so the
same run prints the same digits everywhere (a mean is taken of the unrounded fractions, then
rounded once). No torch import: the page is served before the engine loads.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = [
    "PERCENT_DECIMALS",
    "hover_percent",
    "mean_percent",
    "percent",
    "percent_text",
    "styled",
]

#: decimals of every percent the page and the CLI print
PERCENT_DECIMALS = 2


def percent(values: Any) -> Any:
    """Fractions on [0, 1] -> percent rounded to PERCENT_DECIMALS (a Series stays a Series)."""
    if isinstance(values, pd.Series | pd.DataFrame):
        return (values.astype(float) * 100).round(PERCENT_DECIMALS)
    return round(100 * float(values), PERCENT_DECIMALS)


def mean_percent(values: Any) -> float:
    """The mean of unrounded fractions in percent, rounded once (never a mean of rounded values,
    which can differ in the last digit)."""
    return round(100 * float(pd.Series(values, dtype=float).mean()), PERCENT_DECIMALS)


def percent_text(value: float) -> str:
    """'62.48%' for 0.62479."""
    return f"{100 * float(value):.{PERCENT_DECIMALS}f}%"


def hover_percent(field: str = "y") -> str:
    """A plotly hover placeholder for a value already in percent: '%{y:.2f}%'."""
    return f"%{{{field}:.{PERCENT_DECIMALS}f}}%"


def styled(frame: pd.DataFrame, decimals: dict[str, int] | None = None) -> Any:
    """A table as the page shows it: every float column with PERCENT_DECIMALS decimals (so 16.8
    reads 16.80 beside 95.93) unless ``decimals`` names another count; the values stay numbers."""
    places = {c: PERCENT_DECIMALS for c in frame.columns if pd.api.types.is_float_dtype(frame[c])}
    places.update({c: d for c, d in (decimals or {}).items() if c in frame.columns})
    return frame.style.format({c: f"{{:.{d}f}}" for c, d in places.items()}, na_rep="")
