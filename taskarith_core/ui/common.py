"""Glue every tab shares: user errors as ``gr.Error``, ``gr.Progress`` as a core progress callback,
the per-user source settings, and writing downloadable files.

Nothing here imports torch: the page must be served before the engine has finished importing.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import InputError
from ..runconfig import RunConfig

__all__ = [
    "DEFAULT_SOURCE",
    "config_from_source",
    "download_dir",
    "explorer",
    "gr_progress",
    "user_errors",
    "write_figure_html",
    "write_figures",
    "write_text",
]

log = logging.getLogger("taskarith_core.ui")

#: per-user source settings kept in ``gr.State``: the keys of RunConfig that name a source
DEFAULT_SOURCE: dict[str, Any] = {
    "source": "zoo",
    "paradigm": "full",
    "zoo_root": None,
    "manifest": None,
    "device": "cpu",
}


def user_errors(fn: Callable) -> Callable:
    """Show every failure as one sentence in a ``gr.Error`` box, never a traceback.

    InputError messages already say what to change; anything else is logged on the server with
    its traceback and shown as a short line that points at the log.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except InputError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
            log.exception("callback %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(
                f"{type(exc).__name__}: {exc}. This is a bug, not your input; the server log "
                "has the details.",
                print_exception=False,
            ) from None

    return wrapper


def gr_progress(progress: Any) -> Callable[[int, int, str], None]:
    """Adapt ``gr.Progress`` (or None) to the core's ``progress(done, total, message)``."""

    def update(done: int, total: int, message: str = "") -> None:
        if progress is not None and total:
            progress((done, total), desc=message or None)

    return update


def config_from_source(source: dict[str, Any] | None, **settings: Any) -> RunConfig:
    """A validated RunConfig of the user's source settings plus a tab's controls."""
    data = dict(DEFAULT_SOURCE)
    data.update(source or {})
    data.update(settings)
    return RunConfig.from_dict(data)


def explorer(cfg: RunConfig):
    """The shared service of the config's source (imports the engine on first use)."""
    from ..service.sources import explorer_for

    return explorer_for(cfg)


#: download folders older than this are removed when a new one is made (Gradio serves its own
#: copy of a returned file, so ours is only needed while the callback returns)
DOWNLOAD_MAX_AGE_S = 24 * 3600


def _remove_stale(parent: Path, max_age_s: float) -> None:
    """Delete sibling download folders older than ``max_age_s`` (a page left running for weeks
    otherwise fills the temp folder: 4.6 MB per interactive figure)."""
    cutoff = time.time() - max_age_s
    for old in parent.iterdir():
        try:
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed meanwhile by another process
            continue


def download_dir() -> Path:
    """A fresh folder per download so concurrent users never overwrite each other's files."""
    parent = Path(tempfile.gettempdir()) / "taskarith_downloads"
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, DOWNLOAD_MAX_AGE_S)
    folder = parent / uuid.uuid4().hex[:12]
    folder.mkdir()
    return folder


def write_text(name: str, text: str) -> str:
    path = download_dir() / name
    path.write_text(text)
    return str(path)


PLOTLY_JS = "plotly.min.js"


def shared_plotly_js() -> Path:
    """One copy of plotly.js (from the installed plotly package) beside every download folder:
    figure HTML files point at it by a relative path instead of embedding 4.6 MB each."""
    parent = Path(tempfile.gettempdir()) / "taskarith_downloads"
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / PLOTLY_JS
    if not path.is_file():
        from plotly.offline import get_plotlyjs

        tmp = parent / f".{uuid.uuid4().hex[:8]}.js.tmp"
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
        tmp.replace(path)
    return path


def write_figures(figures: dict[str, Any]) -> list[str]:
    """Interactive HTML of each figure (None skipped) plus the one shared ``plotly.min.js``
    they load from the same folder: download all of them into one folder to open offline."""
    folder = download_dir()
    paths = []
    for name, figure in figures.items():
        if figure is None:
            continue
        path = folder / name
        figure.write_html(str(path), include_plotlyjs=PLOTLY_JS, full_html=True)
        paths.append(str(path))
    script = folder / PLOTLY_JS
    if paths:
        try:
            script.hardlink_to(shared_plotly_js())
        except OSError:  # another file system: a copy
            shutil.copyfile(shared_plotly_js(), script)
        paths.append(str(script))
    return paths


def write_figure_html(name: str, figure: Any) -> str:
    """One figure's HTML, loading plotly.js from ``plotly.min.js`` beside it (offline)."""
    return write_figures({name: figure})[0]
