"""FileSource through the tiny source: protocol, weights, checks and heads."""

from __future__ import annotations

import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.io import load_state_dict, save_state_dict
from taskarith_core.models.files import FileSource, read_visual_state
from taskarith_core.models.source import ModelSource
from tests.tiny_source import TINY_SPLIT_SIZES, make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny"), n_tasks=2)


def test_tiny_source_implements_the_protocol(tiny):
    assert isinstance(tiny, ModelSource)
    assert tiny.tasks == ["task0", "task1"]
    assert tiny.control_task == "control"


def test_finetuned_differs_from_pretrained_with_same_keys(tiny):
    pre, ft = tiny.load_pretrained(), tiny.load_finetuned("task0")
    assert list(pre) == list(ft)
    assert all(k.startswith("visual.") for k in pre)
    assert any(not torch.equal(pre[k], ft[k]) for k in pre)
    assert all(v.dtype == torch.float32 for v in pre.values())


def test_pretrained_file_holds_the_text_tower_too(tiny):
    whole = load_state_dict(tiny.pretrained_path())
    assert any(not k.startswith("visual.") for k in whole)


def test_datasets_are_sized_and_balanced(tiny):
    images, labels = tiny.dataset("task1", "test").tensors
    assert images.shape == (TINY_SPLIT_SIZES["test"], 3, 16, 16)
    assert labels.bincount().tolist() == [16, 16, 16, 16]


def test_build_visual_holds_pretrained(tiny):
    visual = tiny.build_visual()
    pre = tiny.load_pretrained()
    for key, value in visual.state_dict().items():
        torch.testing.assert_close(value, pre["visual." + key])


def test_heads_rebuilt_from_text_tower_match_the_given_ones(tiny):
    rebuilt = FileSource(
        name="copy",
        arch=tiny.arch,
        pretrained=tiny.pretrained_path(),
        finetuned={t: tiny.finetuned_path(t) for t in tiny.tasks},
        classnames={t: tiny.classnames(t) for t in [*tiny.tasks, "control"]},
        data=tiny.dataset,
        templates=["a photo of a {}.", "a picture showing {}."],
    )
    head = rebuilt.head("task0")
    assert head.shape == (4, 16)
    torch.testing.assert_close(head, tiny.head("task0"))


def test_unknown_task_is_one_line_input_error(tiny):
    with pytest.raises(InputError, match="unknown task 'nope'"):
        tiny.load_finetuned("nope")
    with pytest.raises(InputError, match="unknown split"):
        tiny.dataset("task0", "dev")


def test_checkpoint_of_other_shape_names_key_and_shapes(tiny, tmp_path):
    bad = tiny.load_finetuned("task0")
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    bad[key] = torch.zeros(8, 32)
    path = save_state_dict(bad, tmp_path / "bad.safetensors")
    source = FileSource(
        name="bad",
        arch=tiny.arch,
        pretrained=tiny.pretrained_path(),
        finetuned={"task0": path},
        classnames={"task0": tiny.classnames("task0")},
        data=tiny.dataset,
    )
    with pytest.raises(InputError, match=r"c_fc.weight' has shape \(8, 32\).*\(64, 32\)"):
        source.load_finetuned("task0")


def test_read_visual_state_adds_prefix_to_bare_tower(tiny, tmp_path):
    bare = {k[len("visual.") :]: v for k, v in tiny.load_finetuned("task1").items()}
    path = save_state_dict(bare, tmp_path / "bare.safetensors")
    assert set(read_visual_state(path)) == set(tiny.load_pretrained())


@pytest.mark.parametrize("paradigm", ["attention", "talos"])
def test_paradigms_change_only_allowed_entries(tmp_path, paradigm):
    source = make_tiny_source(tmp_path, n_tasks=1, paradigm=paradigm)
    pre, ft = source.load_pretrained(), source.load_finetuned("task0")
    mask = source.talos_mask("task0")
    for key in pre:
        changed = pre[key] != ft[key]
        if paradigm == "attention" and not key.endswith(("in_proj_weight", "out_proj.weight")):
            assert not changed.any(), key
        if paradigm == "talos":
            assert not (changed & (mask[key] == 0)).any(), key
