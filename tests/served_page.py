"""The page on a tiny source, served on a free local port as ``python app.py`` serves it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from app import MAX_UPLOAD
from taskarith_core.service.sources import clear_explorers, register_source
from taskarith_core.ui.common import config_from_source
from taskarith_core.ui.page import build_page
from tests.tiny_source import make_tiny_source


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_tiny_page(
    tmp_path_factory: pytest.TempPathFactory, name: str, concurrency: int
) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(url, demo, settings) of a 3-task tiny zoo page with its own disk cache; closed after."""
    root = tmp_path_factory.mktemp(name)
    settings = {"source": "zoo", "paradigm": "full", "zoo_root": str(root), "device": "cpu"}
    register_source(config_from_source(settings), make_tiny_source(root, n_tasks=3))
    demo = build_page(settings)
    demo.queue(default_concurrency_limit=concurrency)
    port = _free_port()
    demo.launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        max_file_size=MAX_UPLOAD,
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TASKARITH_CACHE", str(tmp_path_factory.mktemp("cache")))
            yield f"http://127.0.0.1:{port}/", demo, settings
    finally:
        demo.close()
        clear_explorers()
