"""The functional image-tower forward against open_clip's own module forward.

The reference is always ``visual(images)`` of the open_clip module, so a slip in the functional
forward (a missed LayerNorm, the wrong GELU, a transposed head split) fails these tests; towers
with features it does not implement must fall back to the module, never compute something else.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.model import _build_vision_tower

from taskarith_core.models.evaluation import batched_logits, evaluate_states, split_tensors
from taskarith_core.models.fast_forward import chunked, fast_features, tower_forward, tower_spec
from taskarith_core.zoo.arch import model_config

ZOO_VISION = model_config(vocab_size=64)["vision_cfg"]
SMALL = {"image_size": 24, "layers": 2, "width": 48, "head_width": 16, "patch_size": 8}


def _tower(vision: dict, quick_gelu: bool = False, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    visual = _build_vision_tower(16, dict(vision), quick_gelu=quick_gelu).eval()
    with torch.no_grad():  # open_clip initialises LayerNorms to the identity: make them matter
        for name, param in visual.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")):
                param.add_(0.3 * torch.randn_like(param))
            elif name.endswith("bias") or name.endswith("gamma"):
                param.add_(0.1 * torch.randn_like(param))
    return visual


def _images(visual: torch.nn.Module, n: int = 9, seed: int = 1) -> torch.Tensor:
    h, w = visual.image_size
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _assert_same_as_module(visual: torch.nn.Module, n: int = 9) -> None:
    spec = tower_spec(visual)
    assert spec is not None, "the tower should be supported"
    images = _images(visual, n)
    with torch.no_grad():
        expected = visual(images)
        got = fast_features(visual, spec, images)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_zoo_tower_matches_module_forward():
    _assert_same_as_module(_tower(ZOO_VISION), n=33)


@pytest.mark.parametrize(
    "extra, quick",
    [
        ({}, False),
        ({}, True),  # QuickGELU (OpenAI checkpoints)
        ({"ls_init_value": 0.5}, False),  # LayerScale on both branches
        ({"no_ln_pre": True}, False),
        ({"final_ln_after_pool": True}, False),
        ({"act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}}, False),
        ({"image_size": (24, 32), "patch_size": 8}, False),  # non-square grid
        ({"image_size": 26}, False),  # a remainder the stride-p convolution drops
        ({"pos_embed_type": "sin_cos_2d"}, False),
    ],
)
def test_small_open_clip_variants_match_module_forward(extra, quick):
    _assert_same_as_module(_tower({**SMALL, **extra}, quick_gelu=quick))


@pytest.mark.parametrize(
    "extra",
    [
        {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
        {"patch_dropout": 0.5},
        {"pool_type": "avg"},
        {"output_tokens": True},
        {"qk_norm": True},  # custom blocks
    ],
)
def test_unsupported_features_fall_back_to_the_module(extra):
    visual = _tower({**SMALL, **extra})
    assert tower_spec(visual) is None
    assert tower_forward(visual) is visual


def test_resnet_training_mode_and_half_weights_fall_back():
    resnet = _build_vision_tower(16, {"layers": (1, 1, 1, 1), "width": 16, "image_size": 32})
    assert tower_spec(resnet) is None
    visual = _tower(SMALL)
    assert tower_forward(visual.train()) is visual
    assert tower_forward(visual.eval()) is not visual
    half = _tower(SMALL).half()
    assert tower_spec(half) is None and tower_forward(half) is half


def test_fast_forward_reads_weights_changed_in_place():
    visual = _tower(SMALL)
    forward = tower_forward(visual)
    images = _images(visual)
    with torch.no_grad():
        before = forward(images)
        visual.transformer.resblocks[1].mlp.c_fc.weight.mul_(1.5)
        after = forward(images)
        torch.testing.assert_close(after, visual(images), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_chunked_equals_one_call():
    visual = _tower(SMALL)
    forward = tower_forward(visual)
    images = _images(visual, n=10)
    with torch.no_grad():
        torch.testing.assert_close(chunked(forward, images, 3), forward(images))


def test_with_autograd_the_aten_path_gives_the_same_features():
    visual = _tower(SMALL)
    images = _images(visual)
    with torch.no_grad():
        expected = visual(images)
    got = tower_forward(visual)(images)  # grad enabled: F.linear, not the oneDNN op
    assert got.requires_grad
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-5)


def test_vit_b32_matches_module_forward():
    """A real open_clip architecture (random weights): same function, same numbers."""
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-32")
    torch.manual_seed(0)
    visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"]).eval()
    _assert_same_as_module(visual, n=2)


# ------------------------------------------------------------------ accuracies on a model source


def _module_accuracy(source, state, task) -> float:
    """Accuracy with open_clip's module forward, independent of evaluation.py."""
    visual = source.build_visual()
    visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items()})
    images, labels = split_tensors(source, task, "test")
    with torch.no_grad():
        logits = F.normalize(visual(images), dim=-1) @ source.head(task).T
    return float((logits.argmax(1) == labels).sum()) / len(labels)


def _assert_exact_accuracies(source) -> None:
    pre = source.load_pretrained()
    ft = source.load_finetuned(source.tasks[-1])
    mix = {k: 0.4 * pre[k] + 0.6 * ft[k] for k in pre}
    states = {"pre": pre, "ft": ft, "mix": mix}
    frame = evaluate_states(source, states, list(source.tasks))
    for row in frame.itertuples():
        assert row.accuracy == _module_accuracy(source, states[row.model], row.task), row


def test_evaluate_states_accuracies_exactly_as_module_on_tiny_source(tmp_path):
    from tests.tiny_source import make_tiny_source

    _assert_exact_accuracies(make_tiny_source(tmp_path, n_tasks=2))


def test_evaluate_states_accuracies_exactly_as_module_on_mini_zoo(mini_zoo_root):
    from taskarith_core.zoo import load_zoo

    source = load_zoo("full", mini_zoo_root)
    assert tower_spec(source.build_visual()) is not None  # the zoo takes the functional path
    _assert_exact_accuracies(source)


def test_batched_logits_close_to_module_logits(mini_zoo_root):
    from taskarith_core.zoo import load_zoo

    source = load_zoo("full", mini_zoo_root)
    task = source.tasks[0]
    images, _ = split_tensors(source, task, "test")
    head = source.head(task)
    visual = source.build_visual()
    with torch.no_grad():
        expected = F.normalize(visual(images), dim=-1) @ head.T
    got = batched_logits(visual, images, head, batch_size=100)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_xi_grid_same_as_with_module_forward(tmp_path, monkeypatch):
    from taskarith_core.analyses.xi import XiGrid, disentanglement_grid
    from taskarith_core.models import evaluation
    from tests.tiny_source import make_tiny_source

    tiny = make_tiny_source(tmp_path, n_tasks=2)
    kwargs = dict(grid=XiGrid(3, -1.5, 1.5), samples=24, use_cache=False)
    fast = disentanglement_grid(tiny, "task0", "task1", **kwargs)
    monkeypatch.setattr(evaluation, "tower_forward", lambda visual: visual)
    module = disentanglement_grid(tiny, "task0", "task1", **kwargs)
    assert fast["xi"].max() > 0  # the grid is not trivially zero
    assert fast["xi"].tolist() == module["xi"].tolist()


def test_agreement_probe_accepts_reassociation_and_rejects_other_results():
    """The oneDNN probe must not refuse float32 summation-order differences (it once did, on
    entries near zero, and the fused op was never used) nor accept a different computation."""
    from taskarith_core.models.fast_forward import _agrees

    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(7, 64, generator=gen), torch.randn(48, 64, generator=gen)
    ref = F.linear(x, w)
    reordered = (x.double() @ w.double().T).float()  # same products, another summation order
    assert _agrees(reordered, ref)
    assert not _agrees(F.gelu(ref), ref)
    assert not _agrees(ref * (1 + 1e-3), ref)
    assert not _agrees(ref[:, :-1], ref)


def test_cpu_inference_uses_the_fused_op_when_this_torch_has_it():
    from taskarith_core.models import fast_forward

    fast_forward._onednn_linear.cache_clear()
    has_op = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
    if not has_op:
        pytest.skip("this torch build has no oneDNN fused linear")
    assert fast_forward._onednn_linear() is not None


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_paths_agree_with_sdpa(threads):
    """The batched-matmul attention used with several CPU threads computes SDPA's function
    (including the class-token-only query of the last block)."""
    from taskarith_core.models.fast_forward import _scaled_dot_product

    gen = torch.Generator().manual_seed(0)
    k, v = torch.randn(2, 5, 3, 17, 8, generator=gen)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for q in (torch.randn(5, 3, 17, 8, generator=gen), torch.randn(5, 3, 1, 8, generator=gen)):
            expected = F.scaled_dot_product_attention(q, k, v)
            torch.testing.assert_close(_scaled_dot_product(q, k, v), expected)
    finally:
        torch.set_num_threads(old)
