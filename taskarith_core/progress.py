"""Progress reporting without print(): the CLI draws a tqdm bar, the page a ``gr.Progress``."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "no_progress"]

#: ``progress(done, total, message)`` is called after each unit of work.
Progress = Callable[[int, int, str], None]


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default callback: report nothing."""
