"""``convert`` and ``reproduce`` on a tiny registered arch: results, and bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from taskarith_core.cli import main
from taskarith_core.io import load_state_dict, save_state_dict

ARCH = "taskarith-test-real-tiny"
CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "head_width": 16, "layers": 2},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def _tree(root: Path, classes, per_class=4):
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                colour = (120 * index % 255, 60 * j % 255, 200 - 90 * index % 200)
                Image.new("RGB", (20, 20), colour).save(folder / f"{j}.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from open_clip.model import CLIP

    root = tmp_path_factory.mktemp("tiny_real")
    (root / "arch.json").write_text(json.dumps(CONFIG))
    torch.manual_seed(0)
    clip = CLIP(**CONFIG)
    state = clip.state_dict()
    save_state_dict(state, root / "pre.safetensors")
    tasks = []
    for index, name in enumerate(("shapes", "colours")):
        gen = torch.Generator().manual_seed(index + 1)
        tuned = {
            k: v + 0.05 * torch.randn(v.shape, generator=gen)
            for k, v in state.items()
            if k.startswith("visual.")
        }
        save_state_dict(tuned, root / f"{name}.safetensors")
        _tree(root / name, ["a", "b"])
        tasks.append(
            {
                "name": name,
                "checkpoint": f"{name}.safetensors",
                "classnames": [f"{name} one", f"{name} two"],
                "templates": ["a photo of {}."],
                "data": {"format": "imagefolder", "root": name, "val_fraction": 0.25},
            }
        )
    _tree(root / "ctrl", ["x", "y"])
    manifest = {
        "name": "tiny-real",
        "arch": ARCH,
        "arch_config": "arch.json",
        "pretrained": "pre.safetensors",
        "cache_dir": "cache",
        "tasks": tasks,
        "control": {
            "name": "control",
            "classnames": ["cat", "dog"],
            "templates": ["a photo of a {}."],
            "data": {"format": "imagefolder", "root": "ctrl"},
        },
    }
    (root / "m.yaml").write_text(yaml.safe_dump(manifest))
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_convert_one_file_and_a_manifest(tiny, capsys):
    out = tiny / "shapes_oc.safetensors"
    args = ["convert", str(tiny / "shapes.safetensors"), "--arch", ARCH, "--out", str(out)]
    assert main(args) == 2  # the tiny arch is unknown until its config is given
    assert "unknown open_clip architecture" in _error_line(capsys) and not out.exists()
    assert main(["convert", "--manifest", str(tiny / "m.yaml")]) == 0
    assert len(list((tiny / "cache" / "converted").glob("*.safetensors"))) == 3
    assert len(list((tiny / "cache" / "heads").glob("*.safetensors"))) == 3
    assert main([*args, "--arch-config", str(tiny / "arch.json")]) == 0
    assert set(load_state_dict(out)) == set(load_state_dict(tiny / "shapes.safetensors"))


def test_convert_refuses_pickle_without_trust(tiny, capsys):
    path = tiny / "plain.pt"
    torch.save(load_state_dict(tiny / "shapes.safetensors"), path)
    out = tiny / "never.safetensors"
    code = main(["convert", str(path), "--arch", "ViT-B-32", "--out", str(out)])
    assert code == 2 and "--trust-pickle" in _error_line(capsys)
    assert not out.exists()


def test_convert_refuses_another_architecture(tiny, capsys):
    out = tiny / "never.safetensors"
    code = main(
        ["convert", str(tiny / "shapes.safetensors"), "--arch", "ViT-B-32", "--out", str(out)]
    )
    line = _error_line(capsys)
    assert code == 2 and "visual.class_embedding" in line and "(768,)" in line
    assert not out.exists()


def test_reproduce_bad_manifest_is_one_line(tiny, capsys):
    data = yaml.safe_load((tiny / "m.yaml").read_text())
    data["tasks"][0]["checkpoint"] = "gone.safetensors"
    bad = tiny / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tiny / "never.csv"
    code = main(["reproduce", "--manifest", str(bad), "--protocol", "addition", "--out", str(out)])
    assert code == 2 and "tasks[0].checkpoint is not found" in _error_line(capsys)
    assert not out.exists()


def test_reproduce_addition_and_negation(tiny, capsys):
    out = tiny / "addition.csv"
    args = ["reproduce", "--manifest", str(tiny / "m.yaml"), "--methods", "ta,sta-amp"]
    assert main([*args, "--protocol", "addition", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-real" in printed and "sta-amp" in printed and "finetuned" in printed
    import pandas as pd

    table = pd.read_csv(out)
    assert set(table["method"]) >= {"ta", "sta-amp", "zeroshot", "finetuned"}
    assert table["absolute"].between(0, 100).all() and set(table["task"]) >= {"shapes", "mean"}
    assert main([*args[:3], "--methods", "ta", "--protocol", "negation"]) == 0
    assert "control" in capsys.readouterr().out


def test_manifest_reproduce_streams_with_the_same_table(tiny, monkeypatch):
    """A manifest source streams by default; the in-memory path gives the very same table."""
    from taskarith_core.real import streamed as streamed_module
    from taskarith_core.real.reproduce import reproduce
    from taskarith_core.real.source import load_manifest_source

    calls = []
    original = streamed_module.streamed_method
    monkeypatch.setattr(
        streamed_module, "streamed_method", lambda *a, **k: calls.append(a[1]) or original(*a, **k)
    )
    source = load_manifest_source(tiny / "m.yaml")
    grids = {"ta": [0.2, 0.8], "ties": [0.5, 1.0], "sta-amp": [0.5, 0.9]}
    streamed, _ = reproduce(source, "addition", list(grids), grids=grids)
    assert calls == list(grids)
    memory, _ = reproduce(source, "addition", list(grids), grids=grids, stream=False)
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(streamed, memory)


def test_reproduce_runs_on_the_zoo_too(mini_zoo_root, capsys):
    args = ["reproduce", "--source", "zoo:full", "--zoo-root", str(mini_zoo_root)]
    assert main([*args, "--protocol", "addition", "--methods", "ta", "--max-samples", "16"]) == 0
    printed = capsys.readouterr().out
    assert "ta" in printed and "zeroshot" in printed


def test_reproduce_refuses_a_method_the_source_cannot_run_before_starting(
    mini_zoo_root, monkeypatch, capsys
):
    from taskarith_core.analyses import protocol

    def never(*args, **kwargs):
        raise AssertionError("the protocol started")

    monkeypatch.setattr(protocol, "addition_protocol", never)
    monkeypatch.setattr(protocol, "negation_protocol", never)
    args = ["reproduce", "--source", "zoo:full", "--zoo-root", str(mini_zoo_root)]
    assert main([*args, "--protocol", "addition", "--methods", "ta,talos-mask"]) == 2
    assert "needs the TaLoS masks" in _error_line(capsys)
    assert main([*args, "--protocol", "negation", "--methods", "ta,ties"]) == 2
    assert "'ties' has no negation" in _error_line(capsys)


def test_reproduce_prints_each_method_when_done_and_keeps_them_on_a_failure(
    mini_zoo_root, monkeypatch, capsys, tmp_path
):
    from taskarith_core.analyses import protocol

    def grid(source, name, *args, **kwargs):
        if name == "ties":
            raise RuntimeError("the machine ran out of memory")
        return [0.5]

    monkeypatch.setattr(protocol, "method_grid", grid)
    out = tmp_path / "finished.csv"
    args = ["reproduce", "--source", "zoo:full", "--zoo-root", str(mini_zoo_root)]
    with pytest.raises(RuntimeError):
        main([*args, "--protocol", "addition", "--methods", "ta,ties", "--max-samples", "8",
              "--out", str(out)])  # fmt: skip
    said = capsys.readouterr()
    assert said.out.startswith("done: ta (lam=0.5): absolute ")
    assert "wrote the 1 finished methods" in said.err
    import pandas as pd

    assert set(pd.read_csv(out)["method"]) == {"ta"}
