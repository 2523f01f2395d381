"""Reading the small text files a user names (a manifest, a run config, an architecture config).

Kept free of torch so the page can read an uploaded config without loading the engine.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError, describe

__all__ = ["TEXT_FILE_LIMIT", "read_text_file"]

#: bytes of a manifest or run config; the real ones are a few kB
TEXT_FILE_LIMIT = 1 << 20


def read_text_file(path: str | Path, what: str, limit: int = TEXT_FILE_LIMIT) -> str:
    """The UTF-8 text of a small input file.

    Missing, unreadable, oversized or binary files get one line that names the file and what is
    wrong with it, and never any of its content."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; check the path")
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(
                f"{path}: is {size} bytes, more than the {limit} a {what} may have; "
                f"give the {what} itself"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot be read ({describe(exc)}); check its permissions"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: is not UTF-8 text ({describe(exc)}); give a {what} written as text"
        ) from None
