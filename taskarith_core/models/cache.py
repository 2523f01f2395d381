"""Disk cache for expensive model-based results (importances, heads), keyed by what determines them.

A key is the sha256 of a JSON document naming every input: content hashes of the model files, the
metric, Ns, the seed, the task. Changing any of them gives another key, so a stale entry is never
reused; entries are written atomically, and an unreadable entry counts as absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError

from ..errors import InputError
from ..io import atomic_path, file_sha256, load_state_dict, save_state_dict

__all__ = [
    "cache_dir",
    "cache_key",
    "file_digest",
    "load_cached_frame",
    "load_cached_state",
    "save_cached_frame",
    "save_cached_state",
]

_DIGESTS: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """``$TASKARITH_CACHE``, or ``~/.cache/taskarith``."""
    root = os.environ.get("TASKARITH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "taskarith"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content, remembered per (path, size, mtime) so a big checkpoint is read
    once per process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = file_sha256(path)
    with _LOCK:
        _DIGESTS[key] = digest
    return digest


def cache_key(**parts: Any) -> str:
    """Stable key from named parts (JSON-serialisable, order-independent)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _entry(kind: str, key: str, root: str | Path | None, suffix: str = ".safetensors") -> Path:
    return Path(root if root is not None else cache_dir()) / kind / f"{key}{suffix}"


def load_cached_state(
    kind: str, key: str, root: str | Path | None = None
) -> dict[str, torch.Tensor] | None:
    """A cached state dict, or None when absent or unreadable."""
    path = _entry(kind, key, root)
    if not path.is_file():
        return None
    try:
        return load_state_dict(path)
    except (InputError, SafetensorError, OSError):
        return None


def save_cached_state(
    state: dict[str, torch.Tensor],
    kind: str,
    key: str,
    root: str | Path | None = None,
    metadata: dict[str, str] | None = None,
) -> Path | None:
    """Write atomically; a cache folder that cannot be written only costs a recompute later."""
    path = _entry(kind, key, root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_state_dict(state, path, metadata)
    except (OSError, InputError):
        return None


def load_cached_frame(kind: str, key: str, root: str | Path | None = None) -> pd.DataFrame | None:
    """A cached table, or None when absent or unreadable."""
    path = _entry(kind, key, root, ".csv")
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def save_cached_frame(
    frame: pd.DataFrame, kind: str, key: str, root: str | Path | None = None
) -> Path | None:
    """Write a table atomically; an unwritable cache folder only costs a recompute later."""
    path = _entry(kind, key, root, ".csv")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        return path
    except (OSError, InputError):
        return None
