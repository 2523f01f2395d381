"""One exception type for every mistake a user can make, and the one rule for quoting input.

The CLI turns an :class:`InputError` into one line on stderr and exit code 2; the page turns it
into ``gr.Error``. Messages name the file / key / value that is wrong and say what to do about it.

Quoting rule: a message may repeat what the user typed (a path, a name, a number), always through
:func:`quote`, which cuts it to :data:`QUOTE_LIMIT` characters. It never repeats anything read from
a file that failed to parse or validate (keys, values, headers, text): such a file is described by
its path and what is wrong with it, so pointing the tool at a private file cannot print it. The
text of a parser's or loader's exception may quote the file, so it is never passed on either:
:func:`describe` names the kind of failure and where (a line, a column, a byte) and nothing else.
As a last guard every message is cut to :data:`MESSAGE_LIMIT` characters.
"""

from __future__ import annotations

import re

__all__ = ["MESSAGE_LIMIT", "QUOTE_LIMIT", "InputError", "describe", "file_key", "quote"]

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


#: what a tensor name in a checkpoint looks like (dotted identifiers); anything else is not shown
_TENSOR_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


def file_key(key: object, position: int) -> str:
    """A tensor name read from a checkpoint, fit to show: the name when it is a plain dotted
    identifier (what every checkpoint holds), else only its position, so a file that merely
    parses as a checkpoint cannot print arbitrary text through its keys."""
    if isinstance(key, str) and _TENSOR_NAME.fullmatch(key):
        return repr(key)
    return f"number {position + 1}"


def describe(exc: BaseException) -> str:
    """The kind of a parse / load failure and its position, never its text.

    Exception texts of YAML, JSON, pickle and safetensors readers quote the bytes they choked on
    (and torch's suggest ``weights_only=False``, which would run the file's code); this keeps
    only the exception's class name and the numbers that locate the problem."""
    where = []
    mark = getattr(exc, "problem_mark", None)  # yaml
    line = getattr(mark, "line", None) if mark is not None else getattr(exc, "lineno", None)
    column = getattr(mark, "column", None) if mark is not None else getattr(exc, "colno", None)
    if isinstance(line, int):
        where.append(f"line {line + 1 if mark is not None else line}")
    if isinstance(column, int):
        where.append(f"column {column + 1 if mark is not None else column}")
    start = getattr(exc, "start", None)  # UnicodeDecodeError
    if isinstance(exc, UnicodeError) and isinstance(start, int):
        where.append(f"byte {start}")
    name = type(exc).__name__
    return f"{name} at {', '.join(where)}" if where else name


class InputError(ValueError):
    """Bad user input: a missing or corrupt file, a mismatched shape, an out-of-range value."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if len(text) > MESSAGE_LIMIT:
            text = text[: MESSAGE_LIMIT - 3] + "..."
        super().__init__(text)
