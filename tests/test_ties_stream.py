"""The two-read TIES engine equals the in-memory TIES merge bit for bit (torch.equal)."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from taskarith_core.errors import InputError
from taskarith_core.fusion import ties_stream
from taskarith_core.fusion.ties import _rule_torch, ties_merge
from taskarith_core.fusion.ties_stream import TiesStream
from taskarith_core.streaming import stream_merge

SHAPES = {"big": (300, 500), "mid": (7, 911), "bias": (13,), "empty": (0,), "steps": (4,)}


def _states(seed, n_tasks=3, dtype=torch.float32, scale=1e-2, grid=None, zero_frac=0.0):
    gen = torch.Generator().manual_seed(seed)
    pre = {k: torch.randn(s, generator=gen).to(dtype) for k, s in SHAPES.items()}
    pre["steps"] = torch.arange(4)  # not editable: copied
    fts = []
    for _ in range(n_tasks):
        ft = {}
        for key, value in pre.items():
            if not value.is_floating_point():
                ft[key] = value.clone()
                continue
            tau = torch.randn(value.shape, generator=gen) * scale
            if grid is not None:  # many equal magnitudes, also at the threshold
                tau = torch.round(tau / grid) * grid
            tau[torch.rand(value.shape, generator=gen) < zero_frac] = 0.0
            ft[key] = (value.double() + tau.double()).to(dtype) if grid is None else value + tau
        fts.append(ft)
    return pre, fts


def _stream(pre, fts, k, lam, budget_bytes=None):
    engine = TiesStream(pre, fts, k=k, lam=lam, budget_bytes=budget_bytes)
    out = {key: engine.merged(key) for key in pre}
    engine.finish(out)
    return out, engine


def _assert_equal(got, expected):
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        assert torch.equal(got[key], expected[key]), key


@pytest.mark.parametrize("k", [0.2, 0.5, 0.999, 1.0])
def test_two_reads_equal_in_memory_and_patch_positions(k):
    pre, fts = _states(0)
    got, engine = _stream(pre, fts, k, 0.7)
    _assert_equal(got, ties_merge(pre, fts, keep=k, lam=0.7))
    assert engine.reads == 2
    assert engine.patched > 0 or k == 1.0  # the undecided bucket was really patched


def test_in_memory_rule_matches_the_plain_torch_rule():
    gen = torch.Generator().manual_seed(5)
    taus = [torch.randn(200_003, generator=gen) * 1e-3 for _ in range(4)]
    taus[0][::2] = 0.0
    taus[1] = torch.round(taus[1] * 1e3) / 1e3
    limits = [1e-3, 0.0, 5e-4, float("inf")]
    pre = {"w": torch.zeros(200_003)}
    fts = [{"w": tau.clone()} for tau in taus]
    got = ties_merge(pre, fts, lam=0.3, thresholds=limits)["w"]
    assert torch.equal(got, _rule_torch([t.clone() for t in taus], limits, 0.3))


@pytest.mark.parametrize("budget", [None, 0])
def test_ties_at_the_threshold_and_the_fallback(budget):
    pre, fts = _states(1, grid=2e-3)  # ~20 distinct magnitudes: heavy ties in every bucket
    got, engine = _stream(pre, fts, 0.3, 1.0, budget_bytes=budget)
    _assert_equal(got, ties_merge(pre, fts, keep=0.3, lam=1.0))
    assert engine.reads == (3 if budget == 0 else 2)


def test_fallback_when_records_exceed_the_default_budget(monkeypatch):
    monkeypatch.setattr(ties_stream, "BUDGET_BYTES", 1000)
    pre, fts = _states(2)
    got, engine = _stream(pre, fts, 0.2, 1.0)
    _assert_equal(got, ties_merge(pre, fts, keep=0.2, lam=1.0))
    assert engine.reads == 3 and engine.patched == 0


def test_zero_vectors_and_mostly_zero_vectors():
    pre, fts = _states(3, zero_frac=0.9)  # TaLoS-like: 90% exact zeros
    fts[0] = {key: value.clone() for key, value in pre.items()}  # an all-zero task vector
    for k in [0.05, 0.5, 1.0]:  # threshold > 0, and exactly 0 (zeros kept: no effect)
        got, engine = _stream(pre, fts, k, 1.0)
        _assert_equal(got, ties_merge(pre, fts, keep=k, lam=1.0))
        assert engine.reads == 2


def test_k_so_small_that_nothing_is_kept():
    pre, fts = _states(4)
    got, _ = _stream(pre, fts, 1e-9, 1.0)
    _assert_equal(got, ties_merge(pre, fts, keep=1e-9, lam=1.0))
    _assert_equal(got, pre)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_double_precision(dtype):
    pre, fts = _states(5, dtype=dtype, scale=1e-1)
    got, engine = _stream(pre, fts, 0.2, 0.9)
    _assert_equal(got, ties_merge(pre, fts, keep=0.2, lam=0.9))
    assert engine.reads == (3 if dtype == torch.float64 else 2)


def _write(tmp_path, pre, fts):
    save_file(pre, tmp_path / "pre.safetensors")
    paths = []
    for t, ft in enumerate(fts):
        paths.append(tmp_path / f"ft{t}.safetensors")
        save_file(ft, paths[-1])
    return tmp_path / "pre.safetensors", paths


@pytest.mark.parametrize("dtype,budget", [(torch.float32, None), (torch.float16, None),
                                          (torch.float32, 1000)])  # fmt: skip
def test_stream_merge_from_files_is_exact(tmp_path, monkeypatch, dtype, budget):
    if budget is not None:  # the third read, from files
        monkeypatch.setattr(ties_stream, "BUDGET_BYTES", budget)
    pre, fts = _states(6, n_tasks=4, dtype=dtype, grid=None)
    pre_path, paths = _write(tmp_path, pre, fts)
    out = stream_merge("ties", pre_path, paths, tmp_path / "out.safetensors", params={"keep": 0.3})
    _assert_equal(load_file(out), ties_merge(pre, fts, keep=0.3, lam=1.0))


def test_non_finite_input_is_refused_by_name(tmp_path):
    pre, fts = _states(7)
    fts[1]["mid"][0, 3] = float("nan")
    pre_path, paths = _write(tmp_path, pre, fts)
    out = tmp_path / "out.safetensors"
    with pytest.raises(InputError, match="ft1.safetensors: tensor 'mid' contains NaN or inf"):
        stream_merge("ties", pre_path, paths, out)
    assert not out.exists()
