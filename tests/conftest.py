"""Shared pytest fixtures. Owned by the zoo builder; other fixtures are added through them."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Offline, no telemetry, and caches in a private folder so tests never read or fill ~/.cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
if "TASKARITH_CACHE" not in os.environ:
    _TEST_CACHE = tempfile.mkdtemp(prefix="taskarith-test-cache-")
    os.environ["TASKARITH_CACHE"] = _TEST_CACHE
    atexit.register(shutil.rmtree, _TEST_CACHE, ignore_errors=True)  # not left behind in /tmp


@pytest.fixture(scope="session")
def mini_zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A miniature zoo (2 tasks, a few steps, ~10 s) built once per session through build_zoo.

    Its numbers mean nothing; it exercises the same files and code paths as the shipped zoo.
    """
    from taskarith_core.zoo import MINI_SPEC, build_zoo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_zoo(tmp_path_factory.mktemp("mini_zoo"), MINI_SPEC)
    finally:
        torch.set_num_threads(threads)
