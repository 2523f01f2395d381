"""lp and fisher against explicit autograd loops, the mask, and the disk cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from taskarith_core.errors import InputError
from taskarith_core.models import importance as imp
from taskarith_core.models.evaluation import split_tensors
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny"), n_tasks=2)


def _per_sample_grads(source, task, state, images, targets, loss_fn):
    """One plain autograd backward per sample: the reference the vmap path must reproduce."""
    visual = source.build_visual()
    visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items()})
    head = source.head(task)
    grads = []
    for x, y in zip(images, targets):
        visual.zero_grad()
        logits = F.normalize(visual(x[None]), dim=-1)[0] @ head.T
        loss_fn(logits, y).backward()
        grads.append({"visual." + n: p.grad.clone() for n, p in visual.named_parameters()})
    return grads


def test_lp_equals_manual_sum_of_abs_theta_times_grad(tiny):
    state = tiny.load_finetuned("task0")
    got = imp.lp_importance(tiny, "task0", state, samples=5, seed=1)
    images, labels = split_tensors(tiny, "task0", "train", max_samples=5, seed=1)
    ce = lambda logits, y: F.cross_entropy(logits[None], y[None])  # noqa: E731
    grads = _per_sample_grads(tiny, "task0", state, images, labels, ce)
    assert list(got) == list(state)
    for key, theta in state.items():
        expected = sum((theta * g[key]).abs() for g in grads)
        torch.testing.assert_close(got[key], expected, rtol=1e-4, atol=1e-6)
        # Eq. 12 takes |.| per sample: never below |theta * summed gradient|
        summed = (theta * sum(g[key] for g in grads)).abs()
        assert bool((got[key] >= summed - 1e-5).all())
    assert any(
        bool((got[k] > (state[k] * sum(g[k] for g in grads)).abs() + 1e-4).any()) for k in state
    )


def test_fisher_equals_manual_mean_of_squared_log_prob_grads(tiny):
    state = tiny.load_pretrained()
    got = imp.fisher_importance(tiny, "task1", state, samples=6, seed=2)
    images, _ = split_tensors(tiny, "task1", "train", max_samples=6, seed=2)
    visual = tiny.build_visual()
    params = {n: state["visual." + n] for n, _ in visual.named_parameters()}
    own = imp._sample_own_labels(visual, params, tiny.head("task1"), images, seed=2)
    logp = lambda logits, y: F.log_softmax(logits, dim=-1)[y]  # noqa: E731
    grads = _per_sample_grads(tiny, "task1", state, images, own, logp)
    for key in state:
        expected = sum(g[key] ** 2 for g in grads) / len(grads)
        torch.testing.assert_close(got[key], expected, rtol=1e-4, atol=1e-8)


def test_fisher_sampled_labels_follow_the_model_prediction(tiny):
    """Averaged over many draws, the sampled Fisher approaches the exact expectation
    sum_y p(y|x) g_y^2 (TaLoS Eq. 7) on a single image."""
    state = tiny.load_pretrained()
    visual = tiny.build_visual()
    head = tiny.head("task0")
    image = split_tensors(tiny, "task0", "train", max_samples=1, seed=0)[0]
    with torch.no_grad():
        probs = F.softmax(F.normalize(visual(image), dim=-1) @ head.T, dim=-1)[0]
    classes = torch.arange(head.shape[0])
    logp = lambda logits, y: F.log_softmax(logits, dim=-1)[y]  # noqa: E731
    per_class = _per_sample_grads(tiny, "task0", state, image.expand(4, -1, -1, -1), classes, logp)
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    exact = sum(p * g[key].pow(2).sum() for p, g in zip(probs, per_class))
    params = {n: state["visual." + n] for n, _ in visual.named_parameters()}
    draws = imp._sample_own_labels(visual, params, head, image.expand(4000, -1, -1, -1), seed=5)
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    torch.testing.assert_close(freq, probs.double(), atol=0.03, rtol=0)
    sampled = sum(f * g[key].pow(2).sum() for f, g in zip(freq, per_class))
    assert float(sampled) == pytest.approx(float(exact), rel=0.1)


def test_fisher_mask_scores_the_masked_weights(tiny):
    state = tiny.load_pretrained()
    ones = {k: torch.ones_like(v) for k, v in state.items()}
    plain = imp.fisher_importance(tiny, "task0", state, samples=4)
    torch.testing.assert_close(
        imp.fisher_importance(tiny, "task0", state, samples=4, mask=ones), plain
    )
    soft = {k: torch.where(torch.rand_like(v) < 0.5, 1.0, 0.01) for k, v in state.items()}
    masked = imp.fisher_importance(tiny, "task0", state, samples=4, mask=soft)
    scaled = {k: v * soft[k] for k, v in state.items()}
    torch.testing.assert_close(masked, imp.fisher_importance(tiny, "task0", scaled, samples=4))


def test_bad_inputs(tiny):
    state = tiny.load_finetuned("task0")
    with pytest.raises(InputError, match="Ns=0"):
        imp.lp_importance(tiny, "task0", state, samples=0)
    with pytest.raises(InputError, match="unknown task 'zzz'"):
        imp.lp_importance(tiny, "zzz", state)
    bad = dict(state)
    bad["visual.conv1.weight"] = torch.zeros(32, 3, 4, 4)
    with pytest.raises(InputError, match=r"conv1.weight' has shape \(32, 3, 4, 4\)"):
        imp.fisher_importance(tiny, "task0", bad)
    with pytest.raises(InputError, match="not model-based"):
        imp.cached_importance(tiny, "task0", "amp")


def test_cached_importance_hits_disk_and_keys_on_inputs(tiny, tmp_path, monkeypatch):
    first = imp.cached_importance(tiny, "task0", "lp", 4, 0, "cpu", cache_dir=tmp_path)
    assert len(list((tmp_path / "importance").glob("*.safetensors"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(imp, "lp_importance", boom)
    again = imp.cached_importance(tiny, "task0", "lp", 4, 0, "cpu", cache_dir=tmp_path)
    torch.testing.assert_close(again, first)
    lp_amp = imp.cached_importance(tiny, "task0", "lp_amp", 4, 0, "cpu", cache_dir=tmp_path)
    ft = tiny.load_finetuned("task0")
    torch.testing.assert_close(lp_amp, {k: first[k] * ft[k] ** 2 for k in first})
    with pytest.raises(AssertionError, match="recomputed"):
        imp.cached_importance(tiny, "task0", "lp", 4, 1, "cpu", cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="recomputed"):
        imp.cached_importance(tiny, "task0", "lp", 5, 0, "cpu", cache_dir=tmp_path)


def test_corrupt_cache_entry_is_recomputed(tiny, tmp_path):
    first = imp.cached_importance(tiny, "task1", "fisher", 3, 0, "cpu", cache_dir=tmp_path)
    (entry,) = (tmp_path / "importance").glob("*.safetensors")
    entry.write_bytes(b"garbage")
    again = imp.cached_importance(tiny, "task1", "fisher", 3, 0, "cpu", cache_dir=tmp_path)
    torch.testing.assert_close(again, first)
