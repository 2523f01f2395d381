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
    "percent_frame",
    "percent_text",
    "styled",
]

#: decimals of every percent the page and the CLI print
PERCENT_DECIMALS = 2
#: decimals of the other fractions the page prints (ratios, IoU, cosine, xi)
RATIO_DECIMALS = 3
#: columns of analysis tables that hold accuracies as fractions on [0, 1]
ACCURACY_COLUMNS = frozenset(
    {
        "accuracy",
        "normalised",
        "zeroshot",
        "finetuned",
        "merged",
        "mean_accuracy",
        "mean_normalised",
        "nonlinear",
        "linearised",
        "target_accuracy",
        "control_accuracy",
        "control_zeroshot",
    }
)


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


def styled(frame: pd.DataFrame, percent_columns: Any = ()) -> Any:
    """A table as the page shows it (a pandas Styler; the values stay numbers): percent columns
    with PERCENT_DECIMALS decimals (16.8 reads 16.80 beside 95.93), every other float column
    (ratios, IoU, cosine, xi) with RATIO_DECIMALS."""
    places = {
        c: PERCENT_DECIMALS if c in set(percent_columns) else RATIO_DECIMALS
        for c in frame.columns
        if pd.api.types.is_float_dtype(frame[c])
    }
    return frame.style.format({c: f"{{:.{d}f}}" for c, d in places.items()}, na_rep="")


def percent_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """An analysis table with its accuracy columns (fractions) in percent, renamed 'name (%)';
    returns the table and the renamed columns."""
    found = [c for c in frame.columns if c in ACCURACY_COLUMNS]
    names = {c: f"{c} (%)" for c in found}
    shown = frame.assign(**{c: percent(frame[c]) for c in found}).rename(columns=names)
    return shown, list(names.values())
