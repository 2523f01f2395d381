"""Cosine similarity, mask IoU and selection rates on synthetic tensors."""

from __future__ import annotations

import math

import pytest
import torch

from taskarith_core.analyses.geometry import mask_iou, rates_table, task_vector_cosine
from taskarith_core.errors import InputError

ATT = "visual.transformer.resblocks.0.attn.in_proj_weight"
MLP = "visual.transformer.resblocks.1.mlp.c_fc.weight"
EMB = "visual.conv1.weight"


def _vectors():
    gen = torch.Generator().manual_seed(0)
    make = lambda: {  # noqa: E731
        ATT: torch.randn(6, 4, generator=gen),
        MLP: torch.randn(8, 4, generator=gen),
        EMB: torch.randn(2, 3, generator=gen),
    }
    return {"a": make(), "b": make(), "c": make()}


def _flat(vec, keys):
    return torch.cat([vec[k].reshape(-1).double() for k in keys])


def test_whole_cosine_matches_flattened_vectors():
    vecs = _vectors()
    frame = task_vector_cosine(vecs, by="whole")
    assert set(frame["group"]) == {"all"} and len(frame) == 9
    keys = [ATT, MLP, EMB]
    for row in frame.itertuples():
        x, y = _flat(vecs[row.task_a], keys), _flat(vecs[row.task_b], keys)
        expected = float(x @ y / (x.norm() * y.norm()))
        assert row.cosine == pytest.approx(expected, abs=1e-9)
    diag = frame[frame["task_a"] == frame["task_b"]]["cosine"]
    assert diag.to_numpy() == pytest.approx([1.0, 1.0, 1.0])


def test_cosine_per_kind_and_block():
    vecs = _vectors()
    vecs["b"][MLP] = -vecs["a"][MLP]
    by_kind = task_vector_cosine(vecs, by="kind")
    assert set(by_kind["group"]) == {"attention", "mlp", "embedding"}
    row = by_kind.query("group == 'mlp' and task_a == 'a' and task_b == 'b'")
    assert row["cosine"].iloc[0] == pytest.approx(-1.0)
    by_block = task_vector_cosine(vecs, by="block")
    assert set(by_block["group"]) == {"block 0", "block 1", "outside blocks"}


def test_cosine_of_zero_vector_is_nan_and_bad_input_refused():
    vecs = _vectors()
    vecs["c"] = {k: torch.zeros_like(v) for k, v in vecs["c"].items()}
    frame = task_vector_cosine(vecs)
    assert math.isnan(frame.query("task_a == 'a' and task_b == 'c'")["cosine"].iloc[0])
    with pytest.raises(InputError, match="at least 2"):
        task_vector_cosine({"a": vecs["a"]})
    with pytest.raises(InputError, match="unknown grouping"):
        task_vector_cosine(vecs, by="head")


def test_mask_iou_counts():
    m1 = {ATT: torch.tensor([1, 1, 0, 0], dtype=torch.bool), EMB: torch.tensor([1, 0])}
    m2 = {ATT: torch.tensor([0, 1, 1, 0], dtype=torch.bool), EMB: torch.tensor([1, 0])}
    empty = {ATT: torch.zeros(4, dtype=torch.bool), EMB: torch.zeros(2, dtype=torch.bool)}
    frame = mask_iou({"x": m1, "y": m2, "z": empty})
    xy = frame.query("task_a == 'x' and task_b == 'y'").iloc[0]
    assert (xy["intersection"], xy["union"]) == (2, 4)
    assert xy["iou"] == pytest.approx(0.5)
    assert frame.query("task_a == 'x' and task_b == 'x'")["iou"].iloc[0] == 1.0
    assert math.isnan(frame.query("task_a == 'z' and task_b == 'z'")["iou"].iloc[0])
    kind = mask_iou({"x": m1, "y": m2}, by="kind")
    att = kind.query("group == 'attention' and task_a == 'x' and task_b == 'y'")
    assert att["iou"].iloc[0] == pytest.approx(1 / 3)


def test_rates_table_pools_blocks_and_kinds():
    masks = {
        "a": {
            ATT: torch.tensor([1, 1, 0, 0], dtype=torch.bool),
            "visual.transformer.resblocks.0.attn.out_proj.weight": torch.ones(4, dtype=torch.bool),
            MLP: torch.zeros(4, dtype=torch.bool),
        }
    }
    pooled = rates_table(masks)
    att = pooled.query("block == 0 and kind == 'attention'").iloc[0]
    assert (att["numel"], att["selected"], att["rate"]) == (8, 6, 0.75)
    assert pooled.query("block == 1")["rate"].iloc[0] == 0.0
    assert len(rates_table(masks, level="tensor")) == 3
    with pytest.raises(InputError):
        rates_table(masks, level="row")


def test_rates_table_counts_entries_without_ranking():
    key = "visual.transformer.resblocks.0.attn.in_proj_bias"
    masks = {"a": {key: torch.tensor([True, False, False])}}
    imps = {"a": {key: torch.tensor([1.0, 1e-9, 0.5])}}
    assert rates_table(masks, importances=imps)["no_ranking"].tolist() == [1]
    assert rates_table(masks, "tensor", imps)["no_ranking"].tolist() == [1]
