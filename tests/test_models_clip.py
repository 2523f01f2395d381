"""open_clip glue: architecture registration, the zero-shot head formula, state copying."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from taskarith_core.errors import InputError
from taskarith_core.models.clip import (
    build_visual_tower,
    check_compatible,
    create_clip,
    load_visual_state,
    register_arch,
    visual_state,
    zero_shot_head,
)
from tests.tiny_source import TINY_ARCH, TINY_CONFIG


def test_register_from_dict_and_file(tmp_path):
    assert register_arch(TINY_CONFIG, TINY_ARCH) == TINY_ARCH
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["vision_cfg"]["layers"] = 1
    path = tmp_path / "whatever.json"
    path.write_text(json.dumps(cfg))
    register_arch(path, "taskarith-test-one-layer")
    assert "taskarith-test-one-layer" in open_clip.list_models()
    tower = build_visual_tower("taskarith-test-one-layer")
    assert len(tower.transformer.resblocks) == 1
    with pytest.raises(InputError, match="lacks"):
        register_arch({"embed_dim": 4}, "broken")
    with pytest.raises(InputError, match="unknown open_clip architecture"):
        create_clip("no-such-arch")


def test_zero_shot_head_is_scaled_mean_of_normalised_templates():
    register_arch(TINY_CONFIG, TINY_ARCH)
    torch.manual_seed(0)
    model = create_clip(TINY_ARCH)
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    templates = ["a photo of a {}.", "{} in the wild", lambda c: f"art of {c}"]
    head = zero_shot_head(model, tokenizer, ["cat", "dog"], templates)
    scale = model.logit_scale.exp()
    with torch.no_grad():
        for row, name in zip(head, ["cat", "dog"]):
            texts = [f"a photo of a {name}.", f"{name} in the wild", f"art of {name}"]
            emb = F.normalize(model.encode_text(tokenizer(texts)), dim=-1).mean(0)
            torch.testing.assert_close(row, F.normalize(emb, dim=0) * scale)
    torch.testing.assert_close(head.norm(dim=1), scale.expand(2))
    assert not head.is_inference()


def test_visual_state_round_trip_and_independence():
    register_arch(TINY_CONFIG, TINY_ARCH)
    model = create_clip(TINY_ARCH)
    state = visual_state(model)
    assert all(k.startswith("visual.") for k in state)
    state["visual.proj"].add_(1.0)  # a copy: the model is untouched
    assert not torch.equal(state["visual.proj"], model.visual.proj)
    tower = build_visual_tower(TINY_ARCH)
    load_visual_state(tower, state)
    torch.testing.assert_close(tower.proj.detach(), state["visual.proj"])
    bare = {k.removeprefix("visual."): v for k, v in state.items()}
    load_visual_state(tower, bare)  # the prefix is optional


def test_check_compatible_names_first_problem():
    ref = {"a": torch.zeros(2, 3), "b": torch.Size([4])}
    check_compatible(ref, {"a": torch.ones(2, 3), "b": torch.ones(4)}, "f")
    with pytest.raises(InputError, match=r"f: key 'b' \(shape \(4,\)\) is missing"):
        check_compatible(ref, {"a": torch.ones(2, 3)}, "f")
    with pytest.raises(InputError, match=r"key 'a' has shape \(3, 2\) but .* expects \(2, 3\)"):
        check_compatible(ref, {"a": torch.ones(3, 2), "b": torch.ones(4)}, "f")
    with pytest.raises(InputError, match="unexpected key 'c'"):
        check_compatible(ref, {"a": torch.ones(2, 3), "b": torch.ones(4), "c": torch.ones(1)}, "f")


def test_registered_config_files_are_removed_when_the_process_ends(tmp_path):
    """open_clip reads configs from files; ours live in a per-process temp folder that must not
    outlive the process (hundreds of them had piled up in /tmp)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import os, tempfile\n"
        "from taskarith_core.models.clip import register_arch, _config_dir\n"
        "from tests.tiny_source import TINY_ARCH, TINY_CONFIG\n"
        "register_arch(TINY_CONFIG, TINY_ARCH)\n"
        "print(_config_dir())\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=root,
    )
    folder = out.stdout.strip().splitlines()[-1]
    assert folder.startswith(str(tmp_path))
    assert not list(tmp_path.glob("taskarith_open_clip_configs_*"))


def test_config_folders_of_ended_processes_are_swept(tmp_path):
    """A killed process runs no exit handler; the next process removes its folder."""
    import os
    import subprocess
    import sys

    from taskarith_core.models.clip import _remove_orphaned_config_dirs

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                           capture_output=True, check=True).stdout.strip()  # fmt: skip
    dead = tmp_path / f"taskarith_open_clip_configs_{ended}"
    alive = tmp_path / f"taskarith_open_clip_configs_{os.getpid()}"
    other = tmp_path / "taskarith_open_clip_configs_notapid"
    for folder in (dead, alive, other):
        folder.mkdir()
    _remove_orphaned_config_dirs(tmp_path)
    assert not dead.exists() and alive.exists() and other.exists()
