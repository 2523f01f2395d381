"""Loading a run config on the page: only UTF-8 JSON of at most 1 MB, applied whole or not at all
(a config of another source opens that source with its tasks; a missing task changes nothing)."""

from __future__ import annotations

import json
import os

import gradio as gr
import pytest

from taskarith_core.errors import InputError
from taskarith_core.service.sources import clear_explorers, register_source
from taskarith_core.ui.common import config_from_source
from taskarith_core.ui.page import build_page, config_updates
from taskarith_core.ui.upload import MAX_CONFIG_BYTES, read_uploaded_config
from tests.tiny_source import make_tiny_source

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A zoo-like source with 3 tasks and a 'manifest' source with 2 other tasks."""
    zoo_root = tmp_path_factory.mktemp("tiny_zoo")
    zoo = {"source": "zoo", "paradigm": "full", "zoo_root": str(zoo_root), "device": "cpu"}
    register_source(config_from_source(zoo), make_tiny_source(zoo_root, n_tasks=3))
    manifest_root = tmp_path_factory.mktemp("tiny_manifest")
    manifest = {"source": "manifest", "manifest": str(manifest_root / "models.yaml")}
    other = make_tiny_source(manifest_root, n_tasks=2)
    other.tasks = ["cars", "dtd"]
    register_source(config_from_source(manifest), other)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKARITH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield zoo, manifest
    clear_explorers()


def _refused(path, *needles) -> str:
    with pytest.raises(InputError) as info:
        read_uploaded_config(path)
    text = str(info.value)
    for needle in needles:
        assert needle in text
    assert "bug" not in text and "\n" not in text
    return text


def test_a_picture_or_random_bytes_named_json_are_not_text(tmp_path):
    picture = tmp_path / "run_config.json"
    picture.write_bytes(PNG + os.urandom(500))
    _refused(picture, "not text", "run_config.json")
    noise = tmp_path / "noise.json"
    noise.write_bytes(bytes(range(256)) * 4)
    _refused(noise, "not text")
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"method": "caf\xe9"}'.encode("latin-1"))
    _refused(latin, "not text")


def test_more_than_a_megabyte_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"method": "a" * (MAX_CONFIG_BYTES + 10)}))
    text = _refused(big, "at most 1 MB")
    assert "aaaa" not in text


def test_text_that_is_no_run_config_says_so(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"method": ')
    _refused(broken, "not valid JSON")
    _refused(None, "no file was uploaded")
    _refused(tmp_path / "gone.json", "could not be read")


def test_a_config_the_page_wrote_is_read_back(tmp_path, sources):
    zoo, _ = sources
    cfg = config_from_source(zoo, method="ties", tasks=["task0", "task2"], k=0.3)
    path = tmp_path / "run_config.json"
    path.write_text(cfg.to_json())
    assert read_uploaded_config(path) == cfg


def _page_parts(page):
    by_id = {getattr(b, "elem_id", None): b for b in page.blocks.values()}
    state = next(b for b in page.blocks.values() if isinstance(b, gr.State))
    radios = [b for b in page.blocks.values() if isinstance(b, gr.Radio)]
    kind = next(r for r in radios if r.label == "Model source")
    paradigm = next(b for b in page.blocks.values() if getattr(b, "label", "") == "Zoo paradigm")
    manifest = next(
        b for b in page.blocks.values() if str(getattr(b, "label", "")).startswith("Manif")
    )
    pickers = {
        "multi": [by_id["merge-tasks"], by_id["masks-tasks"]],
        "single": [(by_id["forget-target"], 0)],
        "row": [kind, paradigm, manifest],
    }
    return state, by_id["source-status"], pickers, by_id


def test_a_config_of_a_manifest_opens_it_with_its_tasks(sources):
    zoo, manifest = sources
    page = build_page(zoo)
    state, status, pickers, by_id = _page_parts(page)
    cfg = config_from_source(manifest, method="task_arithmetic", tasks=["dtd", "cars"], lam=0.7)
    controls = [by_id["merge-tasks"], by_id["merge-method"]]
    updates = config_updates(cfg, [cfg.tasks, cfg.method], controls, state, status, pickers)
    assert updates[state]["source"] == "manifest"
    assert updates[state]["manifest"] == manifest["manifest"]
    kind, _, path = pickers["row"]
    assert updates[kind] == "manifest" and updates[path] == manifest["manifest"]
    assert updates[by_id["merge-tasks"]]["choices"] == ["cars", "dtd"]
    assert updates[by_id["merge-tasks"]]["value"] == ["dtd", "cars"]
    assert updates[by_id["masks-tasks"]]["choices"] == ["cars", "dtd"]
    assert updates[by_id["forget-target"]]["value"] == "cars"
    assert updates[by_id["merge-method"]] == "task_arithmetic"
    assert "2 tasks" in updates[status]


def test_a_config_naming_a_task_the_source_lacks_changes_nothing(sources):
    zoo, manifest = sources
    page = build_page(zoo)
    state, status, pickers, by_id = _page_parts(page)
    for cfg in (
        config_from_source(zoo, tasks=["task0", "cars"]),
        config_from_source(manifest, tasks=["cars", "task1"]),
        config_from_source(zoo, action="negate", target="dtd", tasks=["dtd"]),
    ):
        with pytest.raises(InputError, match="nothing was changed"):
            config_updates(cfg, [cfg.tasks], [by_id["merge-tasks"]], state, status, pickers)


def test_an_uploaded_config_runs_on_the_page_device(sources, tmp_path):
    """A config written on a GPU machine is not refused on a CPU-only page (nor does it pick
    the server's GPU): the upload keeps the device the page computes on."""
    zoo, _ = sources
    page = build_page(zoo)
    state, status, pickers, by_id = _page_parts(page)
    upload = next(fn for fn in page.fns.values() if fn.targets and fn.targets[0][1] == "upload")
    path = tmp_path / "gpu_run.json"
    path.write_text(config_from_source(zoo, device="cuda:7", tasks=["task0", "task1"]).to_json())
    updates = upload.fn({"path": str(path), "orig_name": path.name}, dict(zoo))
    assert updates[state]["device"] == "cpu"
    assert updates[by_id["merge-tasks"]]["value"] == ["task0", "task1"]
