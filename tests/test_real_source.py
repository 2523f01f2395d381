"""ManifestSource on a randomly initialised open_clip ViT-B-32 and tiny ImageFolder trees."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from taskarith_core.errors import InputError
from taskarith_core.io import save_state_dict
from taskarith_core.models.source import ModelSource
from taskarith_core.real.source import load_manifest_source

EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake"]  # fmt: skip


def _tree(root: Path, classes, splits=("train", "test"), per_class=2):
    for split in splits:
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                Image.new("RGB", (32, 24), (25 * index, 80 * j, 120)).save(folder / f"{j}.png")


class ImageEncoder(torch.nn.Module):
    """Stand-in for the task-vectors release's pickled ``src.modeling.ImageEncoder``."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.model = clip


def _fast_random_clip(arch: str) -> torch.nn.Module:
    """open_clip's own init of ViT-B-32 takes ~15 s on a busy CPU: build the module on the meta
    device and fill it with seeded noise instead (layer norms near 1), which is all tests need."""
    import open_clip
    from open_clip.model import CLIP

    with torch.device("meta"):
        model = CLIP(**open_clip.get_model_config(arch))
    model = model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(0.02 * torch.randn(param.shape, generator=gen))
            if ".ln_" in name or name.startswith(("ln_", "visual.ln_")):
                param.add_(1.0 if name.endswith("weight") else 0.0)
        model.logit_scale.fill_(4.6)
    return model


@pytest.fixture(scope="module")
def b32(tmp_path_factory):
    """Random ViT-B-32 (whole CLIP) + two fine-tuned towers: one safetensors, one pickled module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("b32")
    model = _fast_random_clip("ViT-B-32-quickgelu")
    state = model.state_dict()
    save_state_dict(state, root / "pre.safetensors")
    gen = torch.Generator().manual_seed(0)
    tuned = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    visual = {k: v for k, v in tuned.items() if k.startswith("visual.")}
    save_state_dict(visual, root / "eurosat.safetensors")
    model.load_state_dict(tuned)
    module = types.ModuleType("src.modeling")
    module.ImageEncoder = ImageEncoder
    sys.modules.setdefault("src", types.ModuleType("src"))
    sys.modules["src.modeling"] = module
    ImageEncoder.__module__ = "src.modeling"
    torch.save(ImageEncoder(model), root / "toy_finetuned.pt")
    del sys.modules["src.modeling"]
    _tree(root / "eurosat", EUROSAT)
    _tree(root / "toy", ["cat", "dog"], splits=("train", "val", "test"))
    _tree(root / "ctrl", ["n01", "n02"], splits=("val",), per_class=5)
    (root / "ctrl.txt").write_text("tench\ngoldfish\n")
    torch.set_num_threads(threads)
    return root, tuned


def _manifest(root: Path, **over) -> Path:
    data = {
        "name": "b32-test",
        "arch": "ViT-B-32",
        "pretrained": "pre.safetensors",
        "cache_dir": "cache",
        "trust_pickle": True,
        "tasks": [
            {
                "name": "EuroSAT",
                "checkpoint": "eurosat.safetensors",
                "data": {"format": "imagefolder", "root": "eurosat"},
            },
            {
                "name": "toy",
                "checkpoint": "toy_finetuned.pt",
                "classnames": ["cat", "dog"],
                "templates": ["a photo of a {}."],
                "data": {"format": "imagefolder", "root": "toy"},
            },
        ],
        "control": {
            "name": "ImageNet",
            "classnames_file": "ctrl.txt",
            "templates": ["a photo of a {}."],
            "data": {"format": "imagefolder", "root": "ctrl", "splits": {"test": "val"}},
        },
    }
    data.update(over)
    path = root / f"m{len(list(root.glob('m*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_manifest_source_end_to_end(b32):
    root, tuned = b32
    torch.set_num_threads(1)
    source = load_manifest_source(_manifest(root))
    assert isinstance(source, ModelSource)
    assert source.arch == "ViT-B-32-quickgelu" and source.tasks == ["EuroSAT", "toy"]
    pre = source.load_pretrained()
    assert all(k.startswith("visual.") for k in pre) and len(pre) == 152
    for task in source.tasks:  # safetensors and the pickled ImageEncoder give the same tower
        state = source.load_finetuned(task)
        assert torch.equal(state["visual.conv1.weight"], tuned["visual.conv1.weight"])
    assert source.classnames("EuroSAT")[2] == "brushland or shrubland"
    assert source.classnames("ImageNet") == ["tench", "goldfish"]
    image, label = source.dataset("EuroSAT", "test")[3]
    assert tuple(image.shape) == (3, 224, 224) and label == 1
    sizes = [len(source.dataset("ImageNet", s)) for s in ("train", "val", "test")]
    assert sizes == [7, 1, 2]
    head = source.head("toy")
    assert head.shape == (2, 512)
    cached = list((root / "cache" / "heads").glob("*.safetensors"))
    assert len(cached) == 1
    again = load_manifest_source(_manifest(root))
    assert torch.equal(again.head("toy"), head)  # read from the disk cache
    visual = source.build_visual()
    with torch.no_grad():
        assert visual(image[None]).shape == (1, 512)


def test_dataset_with_other_classes_is_refused(b32):
    root, _ = b32
    _tree(root / "eurosat_bad", [*EUROSAT[:9], "Desert"])
    path = _manifest(root)
    data = yaml.safe_load(path.read_text())
    data["tasks"][0]["data"]["root"] = "eurosat_bad"
    path.write_text(yaml.safe_dump(data))
    source = load_manifest_source(path)
    with pytest.raises(InputError, match="class 'Desert'"):
        source.classnames("EuroSAT")


def test_pickle_checkpoint_without_trust_is_refused(b32):
    root, _ = b32
    source = load_manifest_source(_manifest(root, trust_pickle=False, cache_dir="cache2"))
    with pytest.raises(InputError, match="--trust-pickle"):
        source.load_finetuned("toy")
    assert not list((root / "cache2" / "converted").glob("toy*"))


def test_checkpoint_of_another_architecture_is_refused(b32):
    root, _ = b32
    source = load_manifest_source(_manifest(root, arch="ViT-B-16", cache_dir="cache3"))
    with pytest.raises(InputError) as info:
        source.load_finetuned("EuroSAT")
    message = str(info.value)
    assert "visual.positional_embedding" in message or "visual.conv1.weight" in message
    assert "(as ViT-B-16-quickgelu)" in message and "\n" not in message
    assert not list((root / "cache3" / "converted").glob("*.safetensors"))


@pytest.mark.real_weights
def test_real_manifest_loads():
    """Set TASKARITH_REAL_MANIFEST to a manifest of real checkpoints to run this check."""
    path = os.environ.get("TASKARITH_REAL_MANIFEST")
    if not path:
        pytest.skip("no real checkpoints here: set TASKARITH_REAL_MANIFEST=M.yaml to run")
    source = load_manifest_source(path)
    pre = source.load_pretrained()
    task = source.tasks[0]
    assert set(source.load_finetuned(task)) == set(pre)
    assert source.head(task).shape[0] == len(source.classnames(task))


def test_pretrained_without_text_tower_asks_for_text_weights(b32):
    root, tuned = b32
    visual = {k: v for k, v in tuned.items() if k.startswith("visual.")}
    save_state_dict(visual, root / "tower_only.safetensors")
    path = _manifest(root, pretrained="tower_only.safetensors", cache_dir="cache4")
    with pytest.raises(InputError, match="text_weights"):
        load_manifest_source(path).load_pretrained()
    path = _manifest(
        root,
        pretrained="tower_only.safetensors",
        text_weights="pre.safetensors",
        cache_dir="cache4",
    )
    pre = load_manifest_source(path).load_pretrained()
    assert torch.equal(pre["visual.conv1.weight"], tuned["visual.conv1.weight"])
