"""The restricted unpickler: whole pickled modules load as tensors; anything else is refused."""

from __future__ import annotations

import os
import sys
import types

import open_clip
import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.real.convert import normalise_open_clip, read_checkpoint
from taskarith_core.real.safe_unpickle import load_pickled_module_state

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "head_width": 16, "layers": 2},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


class ImageEncoder(torch.nn.Module):
    """Shaped like the task-vectors release's ``src.modeling.ImageEncoder``: a CLIP without its
    text transformer, plus the preprocessing transforms stored as attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.model = open_clip.model.CLIP(**TINY)
        self.train_preprocess = open_clip.image_transform(16, is_train=True)
        self.val_preprocess = open_clip.image_transform(16, is_train=False)
        self.cache_dir = None
        delattr(self.model, "transformer")


@pytest.fixture
def pickled_encoder(tmp_path, monkeypatch):
    module = types.ModuleType("src.modeling")
    module.ImageEncoder = ImageEncoder
    monkeypatch.setitem(sys.modules, "src", types.ModuleType("src"))
    monkeypatch.setitem(sys.modules, "src.modeling", module)
    monkeypatch.setattr(ImageEncoder, "__module__", "src.modeling")
    encoder = ImageEncoder()
    path = tmp_path / "finetuned.pt"
    torch.save(encoder, path)
    return encoder, path


def test_pickled_module_loads_as_its_state_dict(pickled_encoder):
    encoder, path = pickled_encoder
    # the classes are never imported: drop the fake module before loading
    sys.modules.pop("src.modeling")
    state = load_pickled_module_state(path)
    expected = encoder.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    visual = {k for k in normalise_open_clip(state) if k.startswith("visual.")}
    assert visual == {f"visual.{k}" for k in encoder.model.visual.state_dict()}


def test_read_checkpoint_falls_back_to_restricted_loader_only_when_trusted(pickled_encoder):
    _, path = pickled_encoder
    with pytest.raises(InputError, match="--trust-pickle"):
        read_checkpoint(path)
    assert "model.visual.conv1.weight" in read_checkpoint(path, trust_pickle=True)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Evil(str(marker))}, path)
    with pytest.raises(InputError) as info:
        read_checkpoint(path, trust_pickle=True)
    message = str(info.value)
    assert "refused" in message and "\n" not in message
    # neither the file's global nor torch's advice to retry unsafely is passed on
    assert "system" not in message and "weights_only" not in message
    assert not marker.exists()


def test_eval_global_is_refused(tmp_path):
    import pickle

    class _Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    path = tmp_path / "eval.pt"
    torch.save({"x": _Eval()}, path, pickle_module=pickle)
    with pytest.raises(InputError, match="refused") as info:
        load_pickled_module_state(path)
    said = str(info.value).removeprefix(f"{path}: ")
    assert "eval" not in said and "weights_only" not in said


def test_plain_state_dict_pickle_uses_weights_only(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"visual.conv1.weight": torch.ones(2, 2)}, path)
    assert torch.equal(
        read_checkpoint(path, trust_pickle=True)["visual.conv1.weight"], torch.ones(2, 2)
    )


def test_legacy_pickles_load_plain_tensors_but_refuse_modules(tmp_path):
    plain = tmp_path / "legacy_plain.pt"
    torch.save({"w": torch.ones(1)}, plain, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(plain, trust_pickle=True)["w"], torch.ones(1))
    module = tmp_path / "legacy_module.pt"
    torch.save(torch.nn.Linear(2, 2), module, _use_new_zipfile_serialization=False)
    with pytest.raises(InputError, match="legacy"):
        read_checkpoint(module, trust_pickle=True)


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "jit.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(InputError, match="TorchScript"):
        read_checkpoint(path, trust_pickle=True)
