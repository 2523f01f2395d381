import math

import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.fusion import merge, negate
from taskarith_core.fusion.dare import dare_keep_mask
from taskarith_core.fusion.ties import ties_thresholds

K = "visual.transformer.resblocks.0.attn.in_proj_weight"
B = "visual.transformer.resblocks.0.mlp.c_fc.bias"


def state(*values, key=K):
    return {key: torch.tensor(values, dtype=torch.float32)}


PRE = state(0.0, 0.0, 0.0, 0.0)


def test_sta_merge_by_hand():
    fts = [state(1, 1, 1, 1), state(10, 10, 10, 10), state(100, 100, 100, 100)]
    imps = [state(0, 1, 2, 4), state(3, 3, 0, 1), state(1, 0, 2, 2)]
    # masks at p = 0.5 (see test_masks): M1 = 0000, M2 = 1100, M3 = 0010; no coefficient
    out = merge("sta", PRE, fts, importances=imps, p=0.5)
    assert out[K].tolist() == [10, 10, 100, 0]
    # p = 0: every task above the element-wise minimum is kept
    out0 = merge("sta", PRE, fts, importances=imps, p=0.0)
    assert out0[K].tolist() == [110, 11, 101, 101]


def test_sta_merge_ignores_pretrained_offset_and_keeps_dtype():
    pre = state(1.0, 2.0, 3.0, 4.0)
    fts = [state(2, 2, 3, 4), state(1, 5, 3, 4)]
    imps = [state(1, 0, 0, 0), state(0, 1, 0, 0)]
    out = merge("sta", pre, fts, importances=imps, p=0.5)
    assert out[K].tolist() == [2, 5, 3, 4] and out[K].dtype == torch.float32


def test_sta_negate_by_hand():
    ft = {K: torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])}
    pre = {K: torch.zeros(5)}
    imp = {K: torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])}
    out = negate("sta", pre, pre, ft, importance=imp, p=0.5)
    assert out[K].tolist() == [0, 0, 0, -4, -5]
    base = {K: torch.ones(5)}
    assert negate("sta", base, pre, ft, importance=imp, p=0.5)[K].tolist() == [1, 1, 1, -3, -4]


def test_task_arithmetic_and_negation():
    fts = [state(1, 2, 3, 4), state(-1, 0, 1, 0)]
    assert merge("task_arithmetic", PRE, fts, lam=0.5)[K].tolist() == [0, 1, 2, 2]
    assert negate("task_arithmetic", PRE, PRE, fts[0], lam=2.0)[K].tolist() == [-2, -4, -6, -8]


def test_masked_arithmetic():
    fts = [state(1, 2, 3, 4), state(10, 20, 30, 40)]
    masks = [state(1, 0, 1, 0), state(0, 0, 1, 1)]
    assert merge("masked_arithmetic", PRE, fts, masks=masks, lam=1.0)[K].tolist() == [1, 0, 33, 40]


def test_ties_by_hand():
    fts = [state(3, -1, 2, 0.5), state(-4, 2, 1, 0.1)]
    # k = 0.5 keeps 2 of 4 per task: [3, 0, 2, 0] and [-4, 2, 0, 0]; signs of the sum: - + + 0
    out = merge("ties", PRE, fts, keep=0.5, lam=1.0)
    assert out[K].tolist() == [-4, 2, 2, 0]
    assert merge("ties", PRE, fts, keep=0.5, lam=0.5)[K].tolist() == [-2, 1, 1, 0]


def test_ties_trims_over_the_whole_vector_not_per_tensor():
    pre = {K: torch.zeros(2), B: torch.zeros(2)}
    ft = {K: torch.tensor([5.0, 4.0]), B: torch.tensor([1.0, 0.5])}
    # top half of the whole vector is the K tensor alone
    assert ties_thresholds(pre, [ft], 0.5) == [4.0]
    out = merge("ties", pre, [ft, ft], keep=0.5, lam=1.0)
    assert out[K].tolist() == [5, 4] and out[B].tolist() == [0, 0]


def test_dare_rate_zero_is_task_arithmetic_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    fts = [{K: torch.randn(50, generator=gen)} for _ in range(3)]
    pre = {K: torch.zeros(50)}
    ta = merge("task_arithmetic", pre, fts, lam=0.3)
    torch.testing.assert_close(merge("dare", pre, fts, dare_rate=0.0, lam=0.3)[K], ta[K])
    a = merge("dare", pre, fts, dare_rate=0.7, lam=1.0, dare_seed=5)
    assert torch.equal(a[K], merge("dare", pre, fts, dare_rate=0.7, lam=1.0, dare_seed=5)[K])
    assert not torch.equal(a[K], merge("dare", pre, fts, dare_rate=0.7, lam=1.0, dare_seed=6)[K])


def test_dare_rescales_kept_entries():
    pre = {K: torch.zeros(20000)}
    fts = [{K: torch.ones(20000)}, {K: torch.zeros(20000)}]
    out = merge("dare", pre, fts, dare_rate=0.75, lam=1.0, dare_seed=1)[K]
    keep = dare_keep_mask(torch.Size([20000]), 0.75, 1, 0, K)
    assert torch.equal(out, keep.float() * 4.0)
    assert abs(keep.float().mean().item() - 0.25) < 0.02


def test_consensus_by_hand():
    fts = [state(1, 0.1, 2), state(1, 3, -2), state(0, 0, 0.5)]
    pre = state(0, 0, 0)
    # tau_MTL = [2, 3.1, .5]; TALL masks (lambda_t = 1): 101, 110, 001 -> votes 2 1 2
    out = merge("consensus", pre, fts, lam=1.0, tall_lambda=1.0, agreement=2)
    torch.testing.assert_close(out[K], torch.tensor([2.0, 0.0, 0.5]))
    out1 = merge("consensus", pre, fts, lam=0.5, tall_lambda=1.0, agreement=1)
    torch.testing.assert_close(out1[K], torch.tensor([1.0, 1.55, 0.25]))


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("sta", {"p": 1.5}, "outside"),
        ("sta", {"p": -0.1}, "outside"),
        ("dare", {"dare_rate": 1.0}, "outside"),
        ("ties", {"keep": 0.0}, "outside \\(0, 1\\]"),
        ("ties", {"keep": 1.2}, "outside \\(0, 1\\]"),
        ("task_arithmetic", {"lam": math.inf}, "finite"),
        ("task_arithmetic", {"lam": math.nan}, "finite"),
        ("consensus", {"agreement": 5}, "whole number"),
        ("nope", {}, "unknown merge method"),
        ("task_arithmetic", {"q": 1}, "no parameter"),
    ],
)
def test_bad_params_are_refused(name, params, match):
    fts = [state(1, 1, 1, 1), state(2, 2, 2, 2)]
    extra = {"importances": [state(1, 2, 3, 4)] * 2} if name == "sta" else {}
    with pytest.raises(InputError, match=match):
        merge(name, PRE, fts, **extra, **params)


def test_layout_and_task_count_are_checked():
    with pytest.raises(InputError, match="at least 2"):
        merge("task_arithmetic", PRE, [state(1, 1, 1, 1)])
    with pytest.raises(InputError, match="shape"):
        merge("task_arithmetic", PRE, [state(1, 1, 1, 1), state(1, 1, 1)])
    with pytest.raises(InputError, match="missing"):
        merge("task_arithmetic", PRE, [state(1, 1, 1, 1), state(1, 1, 1, 1, key=B)])
    with pytest.raises(InputError, match="dtype"):
        merge("task_arithmetic", PRE, [state(1, 1, 1, 1), {K: torch.ones(4, dtype=torch.float64)}])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("name", ["sta", "task_arithmetic", "ties", "dare", "consensus"])
def test_gpu_matches_cpu(name):
    gen = torch.Generator().manual_seed(0)
    pre = {K: torch.randn(64, 32, generator=gen)}
    fts = [{K: pre[K] + 0.1 * torch.randn(64, 32, generator=gen)} for _ in range(4)]
    extra = (
        {"importances": [{K: torch.rand(64, 32, generator=gen)} for _ in fts]}
        if name == "sta"
        else {}
    )
    cpu = merge(name, pre, fts, **extra)
    gpu_extra = {k: [{K: t[K].cuda()} for t in v] for k, v in extra.items()}
    gpu = merge(name, {K: pre[K].cuda()}, [{K: f[K].cuda()} for f in fts], **gpu_extra)
    torch.testing.assert_close(gpu[K].cpu(), cpu[K], atol=1e-6, rtol=0)
