"""Checkpoint conversion: transformers CLIP -> open_clip equivalence, prefixes, arch checks."""

from __future__ import annotations

import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.io import load_state_dict, save_state_dict
from taskarith_core.models.clip import register_arch
from taskarith_core.real.convert import (
    arch_shapes,
    convert_checkpoint,
    detect_format,
    from_hf,
    normalise_open_clip,
)

transformers = pytest.importorskip("transformers", reason="transformers is a test dependency")

ARCH = "taskarith-test-hfmap"
OC_CONFIG = {
    "embed_dim": 16,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 16, "layers": 2,
                   "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}  # fmt: skip


def _hf_configs():
    vision = transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=16, hidden_act="quick_gelu",
    )  # fmt: skip
    text = transformers.CLIPTextConfig(
        hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=16, vocab_size=49408, projection_dim=16, hidden_act="quick_gelu",
        eos_token_id=49407, bos_token_id=49406, pad_token_id=0,
    )  # fmt: skip
    return vision, text


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random init leaves layer norms at 1/0 and biases at 0: perturb every tensor so that a
    mapping error anywhere (wrong transpose, swapped q/k, ln_pre vs ln_post) shows up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return model.eval()


def _features(output) -> torch.Tensor:
    """transformers 4 returns the projected features, 5 an output whose pooler_output holds them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _open_clip_model():
    import open_clip

    register_arch(OC_CONFIG, ARCH)
    return open_clip.create_model(ARCH, pretrained=None).eval()


def test_hf_vision_with_projection_matches_open_clip(tmp_path):
    vision_cfg, _ = _hf_configs()
    hf = _perturbed(transformers.CLIPVisionModelWithProjection(vision_cfg), 0)
    path = tmp_path / "hf_vision.safetensors"
    save_state_dict(hf.state_dict(), path)
    model = _open_clip_model()
    out = convert_checkpoint(path, ARCH, tmp_path / "oc.safetensors")
    missing = model.load_state_dict(load_state_dict(out), strict=False)
    assert not [k for k in missing.missing_keys if k.startswith("visual.")]
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=pixels).image_embeds
        got = model.visual(pixels)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_hf_vision_model_without_projection_takes_it_from_fill(tmp_path):
    register_arch(OC_CONFIG, ARCH)
    vision_cfg, _ = _hf_configs()
    hf = _perturbed(transformers.CLIPVisionModel(vision_cfg), 2)
    assert not any(k.startswith("visual_projection") for k in hf.state_dict())
    path = tmp_path / "vision_only.safetensors"
    save_state_dict(hf.state_dict(), path)
    proj = torch.randn(64, 16)
    out = convert_checkpoint(path, ARCH, tmp_path / "oc.safetensors", fill={"visual.proj": proj})
    model = _open_clip_model()
    model.load_state_dict(load_state_dict(out), strict=False)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = hf(pixel_values=pixels).pooler_output
        torch.testing.assert_close(model.visual(pixels), pooled @ proj, atol=1e-4, rtol=1e-4)


def test_hf_clip_model_text_tower_matches_open_clip(tmp_path):
    import open_clip

    vision_cfg, text_cfg = _hf_configs()
    config = transformers.CLIPConfig(
        vision_config=vision_cfg.to_dict(), text_config=text_cfg.to_dict(), projection_dim=16
    )
    hf = _perturbed(transformers.CLIPModel(config), 3)
    path = tmp_path / "hf_clip.safetensors"
    save_state_dict(hf.state_dict(), path)
    out = convert_checkpoint(path, ARCH, tmp_path / "clip.safetensors", visual_only=False)
    model = _open_clip_model()
    result = model.load_state_dict(load_state_dict(out), strict=True)
    assert not result.missing_keys
    tokens = open_clip.get_tokenizer(ARCH)(["a photo of a cat.", "satellite view of a river"])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_text(tokens),
            _features(hf.get_text_features(input_ids=tokens)),
            atol=1e-4,
            rtol=1e-4,
        )
        torch.testing.assert_close(
            model.encode_image(pixels), _features(hf.get_image_features(pixel_values=pixels)),
            atol=1e-4, rtol=1e-4,
        )  # fmt: skip
        torch.testing.assert_close(model.logit_scale, hf.logit_scale)


def test_detect_and_normalise_prefixes():
    t = torch.zeros(1)
    assert detect_format({"vision_model.encoder.layers.0.mlp.fc1.weight": t}) == "hf"
    assert detect_format({"visual.conv1.weight": t}) == "open_clip"
    wrapped = {"module.model.visual.conv1.weight": t, "module.model.logit_scale": t}
    assert set(normalise_open_clip(wrapped)) == {"visual.conv1.weight", "logit_scale"}
    bare = {"conv1.weight": t, "transformer.resblocks.0.ln_1.weight": t}
    assert set(normalise_open_clip(bare)) == {
        "visual.conv1.weight", "visual.transformer.resblocks.0.ln_1.weight"
    }  # fmt: skip


def test_unknown_hf_key_is_refused():
    with pytest.raises(InputError, match="vision_model.encoder.layers.0.weird"):
        from_hf({"vision_model.encoder.layers.0.weird.weight": torch.zeros(1)}, "x")


def test_checkpoint_of_another_architecture_names_key_and_shapes(tmp_path):
    register_arch(OC_CONFIG, ARCH)
    shapes = arch_shapes(ARCH)
    state = {k: torch.zeros(s) for k, s in shapes.items()}
    state["visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)
    path = tmp_path / "other.safetensors"
    save_state_dict(state, path)
    out = tmp_path / "out.safetensors"
    with pytest.raises(InputError) as info:
        convert_checkpoint(path, ARCH, out)
    message = str(info.value)
    assert "visual.conv1.weight" in message and "(64, 3, 16, 16)" in message
    assert "(64, 3, 8, 8)" in message and "\n" not in message
    assert not out.exists()


def test_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(InputError, match="not-an-arch"):
        arch_shapes("not-an-arch")


def test_save_pretrained_folder_converts(tmp_path):
    register_arch(OC_CONFIG, ARCH)
    vision_cfg, _ = _hf_configs()
    hf = _perturbed(transformers.CLIPVisionModelWithProjection(vision_cfg), 4)
    hf.save_pretrained(tmp_path / "hf")
    out = convert_checkpoint(tmp_path / "hf", ARCH, tmp_path / "oc.safetensors")
    state = load_state_dict(out)
    layer = {k: v for k, v in hf.state_dict().items() if "layers.1.self_attn" in k}
    expected = torch.cat([v for p in "qkv" for k, v in layer.items() if f"{p}_proj.weight" in k])
    assert torch.equal(state["visual.transformer.resblocks.1.attn.in_proj_weight"], expected)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither model.safetensors"):
        convert_checkpoint(tmp_path / "empty", ARCH, tmp_path / "x.safetensors")
