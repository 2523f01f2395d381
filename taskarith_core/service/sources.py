"""Which model source a run uses, and one shared :class:`Explorer` per source.

The page's picker, the run config and the CLI all name a source the same way (zoo paradigm + root,
or a manifest path), so ``source_from_config`` is the only place a source gets opened.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import InputError
from ..models.source import ModelSource
from ..runconfig import RunConfig
from .explorer import Explorer

__all__ = [
    "clear_explorers",
    "explorer_for",
    "open_source",
    "register_source",
    "source_label",
]

_EXPLORERS: dict[tuple, Explorer] = {}
_LOCK = threading.Lock()


def open_source(cfg: RunConfig) -> ModelSource:
    """Open the zoo paradigm or the manifest a config names (errors say how to fix the path)."""
    if cfg.source == "manifest":
        from ..real.source import load_manifest_source

        path = Path(str(cfg.manifest))
        if not path.is_file():
            raise InputError(
                f"manifest {path} not found; give the path of an existing manifest file"
            )
        return load_manifest_source(path)
    from ..zoo import PARADIGMS, load_zoo

    if cfg.paradigm not in PARADIGMS:
        raise InputError(f"paradigm={cfg.paradigm!r} is not one of {', '.join(PARADIGMS)}")
    return load_zoo(cfg.paradigm, root=Path(cfg.zoo_root) if cfg.zoo_root else None)


def explorer_for(cfg: RunConfig) -> Explorer:
    """The shared service object of the config's source (opened once per process)."""
    key = cfg.source_key()
    with _LOCK:
        explorer = _EXPLORERS.get(key)
    if explorer is not None:
        return explorer
    source = open_source(cfg)
    with _LOCK:
        return _EXPLORERS.setdefault(key, Explorer(source, device=cfg.device))


def register_source(cfg: RunConfig, source: ModelSource) -> Explorer:
    """Serve an already-open source under the key of ``cfg`` (tests and embedding scripts)."""
    with _LOCK:
        explorer = Explorer(source, device=cfg.device)
        _EXPLORERS[cfg.source_key()] = explorer
        return explorer


def clear_explorers() -> None:
    """Forget every opened source (tests)."""
    with _LOCK:
        _EXPLORERS.clear()


def source_label(cfg: RunConfig) -> str:
    if cfg.source == "manifest":
        return f"manifest {cfg.manifest}"
    root = f" ({cfg.zoo_root})" if cfg.zoo_root else ""
    return f"zoo/{cfg.paradigm}{root}"
