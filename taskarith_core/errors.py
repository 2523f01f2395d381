"""One exception type for every mistake a user can make.

The CLI turns it into one line on stderr and exit code 2; the page turns it into ``gr.Error``.
Messages name the file / key / value that is wrong and say what to do about it.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input: a missing or corrupt file, a mismatched shape, an out-of-range value."""
