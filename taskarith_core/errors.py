"""One exception type for every mistake a user can make, and the one rule for quoting input.

The CLI turns an :class:`InputError` into one line on stderr and exit code 2; the page turns it
into ``gr.Error``. Messages name the file / key / value that is wrong and say what to do about it.

Quoting rule: a message may repeat what the user typed (a path, a name, a number), always through
:func:`quote`, which cuts it to :data:`QUOTE_LIMIT` characters. It never repeats anything read from
a file that failed to parse or validate (keys, values, headers, text): such a file is described by
its path and what is wrong with it, so pointing the tool at a private file cannot print it. As a
last guard every message is cut to :data:`MESSAGE_LIMIT` characters.
"""

from __future__ import annotations

__all__ = ["MESSAGE_LIMIT", "QUOTE_LIMIT", "InputError", "quote"]

#: characters of one quoted user value
QUOTE_LIMIT = 80
#: characters of a whole message (a sentence or two; never a dump)
MESSAGE_LIMIT = 600


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of a value the user typed, cut to ``limit`` characters with an ellipsis."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return repr(text)


class InputError(ValueError):
    """Bad user input: a missing or corrupt file, a mismatched shape, an out-of-range value."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if len(text) > MESSAGE_LIMIT:
            text = text[: MESSAGE_LIMIT - 3] + "..."
        super().__init__(text)
