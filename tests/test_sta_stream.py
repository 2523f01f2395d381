"""The chunked STA engine equals the in-memory ``merge("sta", ...)`` bit for bit."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from taskarith_core.errors import InputError
from taskarith_core.fusion import merge
from taskarith_core.fusion.sta_stream import CHUNK, StaStream
from taskarith_core.masks import _batcher_pairs, selection_network
from taskarith_core.streaming import stream_merge

# "big" spans several chunks and ends in a partial one
SHAPES = {"big": (3, CHUNK + 1234), "mid": (7, 91), "bias": (13,), "one": (1,), "scalar": ()}
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _states(seed, n, dtype=torch.float32, imp_dtype=torch.float32, constant=False):
    """Random theta_pre, theta_t and importances on a 5-level grid: many ties at every rank."""
    gen = torch.Generator().manual_seed(seed)
    pre = {k: torch.randn(s, generator=gen).to(dtype) for k, s in SHAPES.items()}
    pre["steps"] = torch.arange(4)  # not editable: copied
    fts, imps = [], []
    for t in range(n):
        ft, imp = {}, {}
        for key, value in pre.items():
            noise = torch.randn(value.shape, generator=gen) * 1e-2
            ft[key] = (value + noise.to(dtype)) if value.is_floating_point() else value.clone()
            levels = torch.round(torch.rand(value.shape, generator=gen) * 4)
            if constant and t % 2 == 0:
                levels = torch.full(value.shape, 3.0)  # normalises to zeros
            imp[key] = levels.to(imp_dtype)
        fts.append(ft)
        imps.append(imp)
    return pre, fts, imps


def _assert_bits_equal(got, expected):
    """torch.equal, and also the same bit patterns (signed zeros included)."""
    assert got.keys() == expected.keys()
    for key in expected:
        a, b = got[key], expected[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert torch.equal(a, b), key
        if a.is_floating_point():
            bits = _BITS[a.element_size()]
            assert torch.equal(a.view(bits), b.view(bits)), key


def _stream(pre, fts, imps, p):
    engine = StaStream(pre, fts, imps, p=p)
    out = {key: engine.merged(key) for key in pre}
    engine.finish(out)
    return out


@pytest.mark.parametrize("n", range(2, 11))
def test_network_sorts_every_zero_one_input(n):
    """0-1 principle: a comparator network that sorts all 0/1 inputs sorts every input."""
    pairs = _batcher_pairs(n)
    for word in range(1 << n):
        values = [(word >> i) & 1 for i in range(n)]
        for low, high in pairs:
            pair = values[low], values[high]
            values[low], values[high] = min(pair), max(pair)
        assert values == sorted(values)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13, 17])
def test_pruned_steps_give_each_order_statistic_and_keep_inputs(n):
    rng = np.random.default_rng(n)
    for rank in range(n):
        steps, result, count = selection_network(n, rank)
        buffers = rng.integers(0, 4, size=(count, 257)).astype(np.float32)
        inputs = buffers[:n].copy()
        for is_max, a, b, out in steps:
            (np.maximum if is_max else np.minimum)(buffers[a], buffers[b], out=buffers[out])
        assert np.array_equal(buffers[:n], inputs)
        assert np.array_equal(buffers[result], np.sort(inputs, axis=0)[rank])


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("constant", [False, True])
def test_equals_in_memory_sta(n, p, constant):
    pre, fts, imps = _states(n * 10 + int(p * 10), n, constant=constant)
    _assert_bits_equal(_stream(pre, fts, imps, p), merge("sta", pre, fts, importances=imps, p=p))


@pytest.mark.parametrize("n", [2, 5])
def test_noise_floor_equals_in_memory_sta(n):
    pre, fts, imps = _states(40 + n, n)
    for t, imp in enumerate(imps):
        for value in imp.values():
            if value.numel() > 1:  # a third of every tensor is noise far below its maximum
                gen = torch.Generator().manual_seed(t)
                cut = value.reshape(-1)[: max(1, value.numel() // 3)]
                cut.copy_(torch.rand(cut.shape, generator=gen) * 1e-8)
                value.reshape(-1)[-1] = 4.0
    _assert_bits_equal(
        _stream(pre, fts, imps, 0.5), merge("sta", pre, fts, importances=imps, p=0.5)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("imp_dtype", [torch.float16, torch.float64, torch.int64])
def test_low_and_double_precision(dtype, imp_dtype):
    pre, fts, imps = _states(3, 8, dtype=dtype, imp_dtype=imp_dtype, constant=True)
    expected = merge("sta", pre, fts, importances=imps, p=0.7)
    _assert_bits_equal(_stream(pre, fts, imps, 0.7), expected)


def test_empty_tensor_is_copied():
    pre, fts, imps = _states(4, 2)
    for state in [pre, *fts, *imps]:
        state["empty"] = torch.zeros(0)
    assert _stream(pre, fts, imps, 0.7)["empty"].shape == (0,)


def _write(tmp_path, pre, fts, imps):
    paths = {"pre": tmp_path / "pre.safetensors", "ft": [], "imp": []}
    save_file(pre, paths["pre"])
    for t, (ft, imp) in enumerate(zip(fts, imps)):
        paths["ft"].append(tmp_path / f"ft{t}.safetensors")
        paths["imp"].append(tmp_path / f"imp{t}.safetensors")
        save_file(ft, paths["ft"][-1])
        save_file(imp, paths["imp"][-1])
    return paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n", [2, 8])
def test_stream_merge_from_files_is_exact(tmp_path, dtype, n):
    pre, fts, imps = _states(5, n, dtype=dtype, imp_dtype=dtype, constant=True)
    paths = _write(tmp_path, pre, fts, imps)
    out = tmp_path / "out.safetensors"
    stream_merge("sta", paths["pre"], paths["ft"], out, importances=paths["imp"], params={"p": 0.7})
    _assert_bits_equal(load_file(out), merge("sta", pre, fts, importances=imps, p=0.7))


def test_one_combined_importance_file(tmp_path):
    """Task-prefixed entries in one file share its reader: no reused buffer across tasks."""
    pre, fts, imps = _states(6, 3)
    paths = _write(tmp_path, pre, fts, imps)
    combined = {f"t{t}/{k}": v for t, imp in enumerate(imps) for k, v in imp.items()}
    both = tmp_path / "imps.safetensors"
    save_file(combined, both, metadata={"tasks": json.dumps(["t0", "t1", "t2"])})
    out = tmp_path / "out.safetensors"
    stream_merge("sta", paths["pre"], paths["ft"], out, importances=[both], params={"p": 0.5})
    _assert_bits_equal(load_file(out), merge("sta", pre, fts, importances=imps, p=0.5))


@pytest.mark.parametrize("which", ["ft", "imp"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused_by_name(tmp_path, which, bad):
    pre, fts, imps = _states(7, 3)
    (fts if which == "ft" else imps)[1]["mid"][2, 3] = bad
    paths = _write(tmp_path, pre, fts, imps)
    out = tmp_path / "out.safetensors"
    match = f"{which}1.safetensors: tensor 'mid' contains NaN or inf"
    with pytest.raises(InputError, match=match):
        stream_merge("sta", paths["pre"], paths["ft"], out, importances=paths["imp"])
    assert not out.exists()
