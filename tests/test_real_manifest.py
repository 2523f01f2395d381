"""Manifest: YAML/JSON round trip, and one-line errors for every malformed manifest."""

from __future__ import annotations

import json

import pytest
import yaml

from taskarith_core.errors import InputError
from taskarith_core.real.manifest import load_manifest, resolve_arch, save_manifest


def _write(tmp_path, data, name="m.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return path


@pytest.fixture
def files(tmp_path):
    for name in ("pre.safetensors", "mnist.safetensors", "toy.safetensors"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "imagenet.txt").write_text("tench\ngoldfish\n")
    return tmp_path


def _manifest(**over):
    data = {
        "name": "demo",
        "arch": "ViT-B-32",
        "pretrained": "pre.safetensors",
        "tasks": [
            {
                "name": "MNIST",
                "checkpoint": "mnist.safetensors",
                "data": {"format": "torchvision", "dataset": "MNIST", "root": "data"},
            },
            {
                "name": "toy",
                "checkpoint": "toy.safetensors",
                "data": {"format": "imagefolder", "root": "data/toy", "val_fraction": 0.25},
                "classnames": ["cat", "dog"],
                "templates": ["a photo of a {}."],
            },
        ],
        "control": {
            "name": "ImageNet",
            "classnames_file": "imagenet.txt",
            "templates": ["a photo of a {}."],
            "data": {"format": "imagefolder", "root": "data", "splits": {"test": "val"}},
        },
    }
    data.update(over)
    return data


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(files, suffix):
    first = load_manifest(_write(files, _manifest(), "m" + suffix))
    again_path = save_manifest(first, files / ("again" + suffix))
    again = load_manifest(again_path)
    assert again == first
    assert again.tasks[1].data.val_fraction == 0.25
    assert again.control.data.splits == {"test": "val"}
    assert again.resolve(again.pretrained) == files / "pre.safetensors"
    assert json.loads(json.dumps(again.to_dict())) == again.to_dict()


def test_quick_gelu_defaults_on_for_the_papers_archs(files):
    manifest = load_manifest(_write(files, _manifest()))
    assert resolve_arch(manifest) == "ViT-B-32-quickgelu"
    manifest.quick_gelu = False
    assert resolve_arch(manifest) == "ViT-B-32"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"pretrained": "missing.safetensors"}, "file named by pretrained is not found"),
        ({"arch": "ViT-Q-99"}, "arch is not an open_clip architecture"),
        ({"colour": "red"}, "is not a manifest key; allowed: arch"),
        ({"tasks": "MNIST"}, "tasks must be a list"),
        ({"name": None}, "required key 'name'"),
    ],
)
def test_bad_manifest_is_one_line(files, change, needle):
    with pytest.raises(InputError) as info:
        load_manifest(_write(files, _manifest(**change)))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_task_entries(files):
    data = _manifest()
    data["tasks"][1]["checkpoint"] = "nope.safetensors"
    with pytest.raises(InputError, match=r"tasks\[1\].checkpoint is not found"):
        load_manifest(_write(files, data))
    data = _manifest()
    data["tasks"].append(dict(data["tasks"][0]))
    with pytest.raises(InputError, match=r"tasks\[2\] has the name of an earlier task"):
        load_manifest(_write(files, data))
    data = _manifest()
    del data["tasks"][1]["templates"]
    with pytest.raises(InputError, match="give templates"):
        load_manifest(_write(files, data))
    data = _manifest()
    data["tasks"][0]["data"] = {"format": "zip", "root": "data"}
    with pytest.raises(InputError, match="not a known format"):
        load_manifest(_write(files, data))


def test_invalid_yaml_and_missing_manifest(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_manifest(bad)
    with pytest.raises(InputError, match="manifest not found"):
        load_manifest(tmp_path / "absent.yaml")


def test_example_manifest_parses():
    from pathlib import Path

    from taskarith_core.real.manifest import manifest_from_dict

    path = Path(__file__).resolve().parents[1] / "examples" / "manifest.example.yaml"
    manifest = manifest_from_dict(yaml.safe_load(path.read_text()), path.parent, str(path))
    assert [t.name for t in manifest.tasks] == [
        "SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD"
    ]  # fmt: skip
    assert manifest.control.name == "ImageNet" and manifest.trust_pickle
