"""STA's p as the fusion masks see it: only N - 1 distinct masks exist for N tasks.

Eq. 15-17 keep task i at an element when its normalised importance exceeds the p-quantile of the
N values there, and exceeding the interpolated quantile is exceeding its lower order statistic, of
rank floor((N-1) p). So p moves the masks only when that rank changes: ranks 0 .. N-2 give N - 1
distinct masks (rank N-1, p = 1, keeps nothing). Searching p on a fixed grid such as 0.1 ... 0.9
evaluates the same masks several times, and which one validation picks then depends on the grid.

No torch import: the page states the distinct values beside its slider before the engine loads.
"""

from __future__ import annotations

import math

__all__ = ["distinct_p", "distinct_p_text"]


def distinct_p(n_tasks: int, decimals: int = 4) -> tuple[float, ...]:
    """The smallest p of each rank 0 .. N-2, rounded up to ``decimals`` (still the same rank while
    a rank's step is wider than 10^-decimals): the values a search over STA's p needs for N tasks
    (empty below 2 tasks)."""
    if n_tasks < 2:
        return ()
    scale = 10**decimals
    return tuple(math.ceil(r / (n_tasks - 1) * scale - 1e-6) / scale for r in range(n_tasks - 1))


def distinct_p_text(n_tasks: int) -> str:
    """One line for the page: which p values give distinct masks for this many tasks."""
    values = distinct_p(n_tasks, decimals=2)  # values the page's slider (step 0.01) can reach
    if not values:
        return ""
    shown = ", ".join(f"{v:g}" for v in values)
    return (
        f"With {n_tasks} tasks only {len(values)} distinct masks exist, at p = {shown} "
        "(a p between two of them gives the masks of the lower one)."
    )
