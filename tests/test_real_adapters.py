"""PEFT LoRA adapters and tangent (linearised) checkpoints read into a manifest's source."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from taskarith_core.errors import InputError
from taskarith_core.io import load_state_dict, save_state_dict
from taskarith_core.models.linearized import LinearizedTower
from taskarith_core.real.adapters import _encoder_names, merge_peft_lora
from taskarith_core.real.source import load_manifest_source
from taskarith_core.zoo import ZOO_ROOT

Q = "vision_model.encoder.layers.0.self_attn.q_proj"
IN_PROJ = "visual.transformer.resblocks.0.attn.in_proj_weight"


def _adapter(folder: Path, tensors: dict, r: int = 1, alpha: float = 2.0, **config) -> Path:
    """A PEFT adapter folder as ``save_pretrained`` writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    named = {f"base_model.model.{k}": v for k, v in tensors.items()}
    save_state_dict(named, folder / "adapter_model.safetensors")
    return folder


def _tiny_pre() -> dict[str, torch.Tensor]:
    return {
        IN_PROJ: torch.zeros(6, 2),
        "visual.transformer.resblocks.0.attn.out_proj.weight": torch.eye(2),
    }


def test_lora_is_merged_as_scaled_b_times_a_into_the_query_rows(tmp_path):
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0], [2.0]])
    folder = _adapter(tmp_path / "ad", {f"{Q}.lora_A.weight": a, f"{Q}.lora_B.weight": b})
    merged = merge_peft_lora(folder, _tiny_pre(), "tiny")
    expected = torch.zeros(6, 2)
    expected[0:2] = 2.0 * torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # alpha / r = 2
    assert torch.equal(merged[IN_PROJ], expected)
    assert torch.equal(merged["visual.transformer.resblocks.0.attn.out_proj.weight"], torch.eye(2))
    rs = _adapter(tmp_path / "rs", {f"{Q}.lora_A.weight": a, f"{Q}.lora_B.weight": b},
                  r=1, alpha=3.0, use_rslora=True)  # fmt: skip
    assert torch.equal(merge_peft_lora(rs, _tiny_pre())[IN_PROJ][1], torch.tensor([6.0, 0.0]))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({f"{Q}.lora_A.weight": torch.ones(2, 2), f"{Q}.lora_B.weight": torch.ones(2, 2)},
         "does not match r"),
        ({"vision_model.encoder.layers.3.self_attn.q_proj.lora_A.weight": torch.ones(1, 2),
          "vision_model.encoder.layers.3.self_attn.q_proj.lora_B.weight": torch.ones(2, 1)},
         "target module missing"),
        ({f"{Q}.lora_A.weight": torch.ones(1, 5), f"{Q}.lora_B.weight": torch.ones(5, 1)},
         "another architecture"),
        ({f"{Q}.lora_A.weight": torch.ones(1, 2)}, "only one of"),
        ({"transformer.h.0.attn.c_attn.lora_A.weight": torch.ones(1, 2)}, "not a LoRA matrix"),
    ],
)  # fmt: skip
def test_bad_adapters_get_one_sentence(tmp_path, tensors, message):
    folder = _adapter(tmp_path / "bad", tensors)
    with pytest.raises(InputError, match=message) as err:
        merge_peft_lora(folder, _tiny_pre(), "tiny")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def zoo_manifest(tmp_path_factory):
    """A manifest over the shipped zoo's architecture: its pretrained CLIP, one task."""
    root = tmp_path_factory.mktemp("adapters")
    shutil.copy(ZOO_ROOT / "pretrained.safetensors", root / "pre.safetensors")
    shutil.copy(ZOO_ROOT / "config.json", root / "arch.json")
    shutil.copy(ZOO_ROOT / "full" / "shapes.safetensors", root / "plain.safetensors")
    (root / "data" / "test" / "a").mkdir(parents=True)

    def write(checkpoint: str, **over) -> Path:
        data = {
            "name": "zoo-arch",
            "arch": "taskarith-zoo-vit",
            "arch_config": "arch.json",
            "pretrained": "pre.safetensors",
            "cache_dir": "cache",
            "trust_pickle": True,
            "tasks": [
                {
                    "name": "shapes",
                    "checkpoint": checkpoint,
                    "classnames": ["a"],
                    "templates": ["{}"],
                    "data": {"format": "imagefolder", "root": "data"},
                }
            ],
            **over,
        }
        path = root / f"m{len(list(root.glob('m*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return root, write


def test_lora_and_l_lora_adapters_through_a_manifest(zoo_manifest):
    root, write = zoo_manifest
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, generator=gen), torch.randn(64, 4, generator=gen) * 0.01
    _adapter(root / "lora", {f"{Q}.lora_A.weight": a, f"{Q}.lora_B.weight": b}, r=4, alpha=8)
    pre = load_state_dict(root / "pre.safetensors")
    for paradigm in ("lora", "l-lora"):
        source = load_manifest_source(write("lora", paradigm=paradigm))
        state = source.load_finetuned("shapes")
        assert torch.allclose(state[IN_PROJ][:64], pre[IN_PROJ][:64].float() + 2.0 * b @ a)
        assert torch.equal(state[IN_PROJ][64:], pre[IN_PROJ][64:].float())
        linear = isinstance(source.build_visual(), LinearizedTower)
        assert linear == (paradigm == "l-lora")
        # caches are keyed by the name: the linearised evaluation must not reuse plain numbers
        assert source.name == ("zoo-arch (l-lora)" if linear else "zoo-arch")
    with pytest.raises(InputError, match="set paradigm: lora or l-lora"):
        load_manifest_source(write("lora")).load_finetuned("shapes")
    with pytest.raises(InputError, match="not a PEFT LoRA folder"):
        load_manifest_source(write("plain.safetensors", paradigm="lora")).load_finetuned("shapes")


def test_tangent_checkpoint_is_read_by_parameter_order_and_evaluated_linearised(zoo_manifest):
    root, write = zoo_manifest
    pre = load_state_dict(root / "pre.safetensors")
    names = _encoder_names("taskarith-zoo-vit")
    tuned = {n: pre[n].float() + (0.01 if n.startswith("visual.") else 0.0) for n in names}
    state = {f"model.params.{i}": tuned[n] for i, n in enumerate(names)}
    state.update({f"model.params0.{i}": pre[n].float() for i, n in enumerate(names)})
    torch.save({**state, "model_name": "taskarith-zoo-vit"}, root / "linear_finetuned.pt")
    source = load_manifest_source(write("linear_finetuned.pt", paradigm="linearized"))
    got = source.load_finetuned("shapes")
    assert all(torch.equal(got[n], tuned[n]) for n in got)
    assert isinstance(source.build_visual(), LinearizedTower)
    with pytest.raises(InputError, match="set paradigm: linearized") as err:
        load_manifest_source(write("linear_finetuned.pt")).load_finetuned("shapes")  # as plain
    assert "\n" not in str(err.value)
    state[f"model.params0.{names.index('visual.conv1.weight')}"] += 1.0
    torch.save(state, root / "other_base.pt")
    with pytest.raises(InputError, match="linearised around other weights"):
        source = load_manifest_source(write("other_base.pt", paradigm="linearized"))
        source.load_finetuned("shapes")


def test_unknown_or_mixed_paradigms_are_refused(zoo_manifest):
    root, write = zoo_manifest
    with pytest.raises(InputError, match="paradigm is not one"):
        load_manifest_source(write("plain.safetensors", paradigm="sparse"))
    path = write("plain.safetensors", paradigm="linearized")
    data = yaml.safe_load(path.read_text())
    data["tasks"][0]["paradigm"] = "full"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError, match="one manifest per paradigm"):
        load_manifest_source(path)


def test_cli_refuses_an_adapter_alone_and_a_paradigm_the_zoo_lacks(zoo_manifest, tmp_path, capsys):
    from taskarith_core.cli import main

    root, _write = zoo_manifest
    adapter = _adapter(tmp_path / "ad", {f"{Q}.lora_A.weight": torch.ones(1, 64),
                                         f"{Q}.lora_B.weight": torch.ones(64, 1)})  # fmt: skip
    out = tmp_path / "out.safetensors"
    argv = ["convert", str(adapter), "--arch", "taskarith-zoo-vit", "--out", str(out)]
    argv += ["--arch-config", str(root / "arch.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "paradigm: lora or l-lora" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    table = tmp_path / "t.csv"
    argv = ["reproduce", "--source", "zoo:lota", "--protocol", "addition", "--out", str(table)]
    assert main(argv) == 2
    assert "has no 'lota' checkpoints" in capsys.readouterr().err and not table.exists()
