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


#: a string no message may ever contain: it stands for a private file's content
CANARY = "CANARY-7f3e9b1c-do-not-print"


@pytest.fixture
def canary_files(tmp_path: Path) -> dict[str, Path]:
    """Files that hold :data:`CANARY` in the ways a private file might: as plain text, a YAML
    key, YAML/JSON values, broken YAML/JSON, a pickle's global and a safetensors header.

    Point any path a user can type at each of them and assert that ``CANARY`` is in no message
    (``from conftest import CANARY``)."""
    import pickle

    folder = tmp_path / "canary"
    folder.mkdir()
    texts = {
        "plain.txt": f"{CANARY}\nsecond line {CANARY}\n",
        "passwd": f"root:{CANARY}:0:0:root:/root:/bin/bash\n",
        "key.yaml": f"{CANARY}: 1\n",
        "nested.yaml": f"name: x\narch: ViT-B-32\npretrained: p\ntasks:\n  - {CANARY}: 1\n",
        "values.yaml": (
            f"name: {CANARY}\narch: {CANARY}\npretrained: {CANARY}\ntasks:\n"
            f"  - name: {CANARY}\n    checkpoint: {CANARY}\n"
            f"    data: {{format: {CANARY}, root: {CANARY}}}\n"
        ),
        "broken.yaml": f"{CANARY}: [unclosed\n{CANARY}\n",
        "tab.yaml": f"a:\n\t{CANARY}\n",
        "key.json": f'{{"{CANARY}": 1}}\n',
        "value.json": f'{{"method": "{CANARY}", "importance": "{CANARY}"}}\n',
        "broken.json": f'{{"method": "{CANARY}"\n',
        "manifest_in_config.json": f'{{"source": "manifest", "manifest": "{folder}/plain.txt"}}',
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / name
        paths[name].write_text(text)
    paths["binary.bin"] = folder / "binary.bin"
    paths["binary.bin"].write_bytes(b"\xff\xfe" + CANARY.encode() + bytes(range(256)))
    header = f'{{"{CANARY}": {{"dtype": "F32", "shape": [1], "data_offsets": [0, 9]}}}}'
    paths["header.safetensors"] = folder / "header.safetensors"
    paths["header.safetensors"].write_bytes(len(header).to_bytes(8, "little") + header.encode())
    # a pickle that names a global called CANARY (refused before anything is imported)
    paths["global.pt"] = folder / "global.pt"
    paths["global.pt"].write_bytes(b"\x80\x04c" + f"os\n{CANARY}\n".encode() + b")R.")
    with open(folder / "value.pkl", "wb") as handle:
        pickle.dump({CANARY: CANARY}, handle)
    paths["value.pkl"] = folder / "value.pkl"
    return paths
