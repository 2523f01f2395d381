import torch

from taskarith_core.fusion.arithmetic import task_arithmetic
from taskarith_core.fusion.average import weight_average
from taskarith_core.fusion.dare import dare_keep_mask, dare_merge, dare_view
from taskarith_core.fusion.ties import ties_merge, ties_thresholds

K = "visual.transformer.resblocks.0.attn.in_proj_weight"
B = "visual.transformer.resblocks.0.mlp.c_fc.bias"


def state(*values, key=K):
    return {key: torch.tensor(values, dtype=torch.float32)}


def test_average_is_the_mean_of_the_finetuned_models():
    pre = state(1.0, 1.0, 1.0)
    fts = [state(2.0, 0.0, 1.0), state(4.0, 1.0, 1.0), state(0.0, 2.0, 7.0)]
    # (2 + 4 + 0) / 3 = 2, (0 + 1 + 2) / 3 = 1, (1 + 1 + 7) / 3 = 3
    assert weight_average(pre, fts)[K].tolist() == [2.0, 1.0, 3.0]


def test_average_copies_integer_buffers_and_keeps_dtype():
    pre = {K: torch.zeros(2, dtype=torch.float16), "ids": torch.tensor([1, 2])}
    fts = [{K: torch.tensor([2.0, 4.0], dtype=torch.float16), "ids": torch.tensor([9, 9])}] * 2
    out = weight_average(pre, fts)
    assert out[K].dtype == torch.float16 and out[K].tolist() == [2.0, 4.0]
    assert out["ids"].tolist() == [1, 2]


def test_dare_pre_step_drops_and_rescales_each_task_vector():
    pre = state(*[0.0] * 64)
    fts = [state(*[1.0] * 64), state(*[2.0] * 64)]
    dared = dare_view(pre, fts, 0.5, 3)
    for task, ft in enumerate(dared):
        keep = dare_keep_mask(torch.Size([64]), 0.5, 3, task, K)
        # kept entries doubled (1 / (1 - 0.5)), dropped ones zero
        expected = torch.where(keep, fts[task][K] * 2, torch.zeros(64))
        assert torch.equal(ft[K], expected)
    assert dare_view(pre, fts, 0.0, 3) == fts


def test_average_with_dare_by_hand():
    pre = state(*[0.0] * 64)
    fts = [state(*[1.0] * 64), state(*[2.0] * 64)]
    keeps = [dare_keep_mask(torch.Size([64]), 0.5, 7, t, K).float() for t in range(2)]
    expected = (keeps[0] * 2 + keeps[1] * 4) / 2
    out = weight_average(pre, fts, dare_rate=0.5, dare_seed=7)
    assert torch.equal(out[K], expected)
    # the same seed gives the same model; another seed another one
    assert torch.equal(weight_average(pre, fts, dare_rate=0.5, dare_seed=7)[K], out[K])
    assert not torch.equal(weight_average(pre, fts, dare_rate=0.5, dare_seed=8)[K], out[K])


def test_task_arithmetic_with_dare_is_the_dare_method():
    g = torch.Generator().manual_seed(0)
    pre = {K: torch.randn(5, 7, generator=g), B: torch.randn(7, generator=g)}
    fts = [{k: v + torch.randn(v.shape, generator=g) for k, v in pre.items()} for _ in range(3)]
    ours = task_arithmetic(pre, fts, lam=0.4, dare_rate=0.3, dare_seed=2)
    reference = dare_merge(pre, fts, dare_rate=0.3, lam=0.4, dare_seed=2)
    for key in pre:
        torch.testing.assert_close(ours[key], reference[key])


def test_ties_with_dare_trims_the_dared_task_vectors():
    pre = state(*[0.0] * 32)
    fts = [state(*[float(i + 1) for i in range(32)]), state(*[-0.5] * 32)]
    dared = dare_view(pre, fts, 0.5, 1)
    # TIES on the DARE'd models is TIES + DARE, thresholds included
    expected = ties_merge(pre, [{K: d[K]} for d in dared], keep=0.2, lam=1.0)
    out = ties_merge(pre, fts, keep=0.2, lam=1.0, dare_rate=0.5, dare_seed=1)
    torch.testing.assert_close(out[K], expected[K])
    assert ties_thresholds(pre, dared, 0.2) != ties_thresholds(pre, fts, 0.2)
