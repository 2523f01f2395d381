import json
from pathlib import Path

import pytest
import torch

from taskarith_core.fusion.iso import iso_c_matrix, iso_c_merge, iso_cts_matrix, iso_cts_merge

W = "visual.transformer.resblocks.0.mlp.c_fc.weight"
B = "visual.transformer.resblocks.0.mlp.c_fc.bias"
REFERENCE = Path(__file__).parent / "data" / "reference_svd_merges.json"


def test_iso_c_flattens_the_spectrum_of_the_sum_by_hand():
    # sum = diag(3, 1): U = V = I, mean singular value 2, so the update is diag(2, 2)
    taus = [torch.diag(torch.tensor([3.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))]
    torch.testing.assert_close(iso_c_matrix(taus), torch.diag(torch.tensor([2.0, 2.0])))


def test_iso_c_merge_scales_and_averages_vectors():
    pre = {W: torch.ones(2, 2), B: torch.zeros(2)}
    fts = [
        {W: torch.ones(2, 2) + torch.diag(torch.tensor([3.0, 0.0])), B: torch.tensor([1.0, 2.0])},
        {W: torch.ones(2, 2) + torch.diag(torch.tensor([0.0, 1.0])), B: torch.tensor([3.0, 0.0])},
    ]
    out = iso_c_merge(pre, fts, lam=0.5)
    torch.testing.assert_close(out[W], torch.ones(2, 2) + torch.eye(2))
    assert out[B].tolist() == [1.0, 0.5]


def test_iso_cts_update_is_isotropic_and_spans_common_and_task_directions():
    gen = torch.Generator().manual_seed(3)
    taus = [torch.randn(12, 8, generator=gen) for _ in range(3)]
    update = iso_cts_matrix(taus, 0.5)
    singular = torch.linalg.svdvals(update)
    # rank 8: common int(8 * 0.5) = 4 -> 8 - round(4 / 3) * 3 = 5 common, 1 per task; all 8
    # directions end up with the same singular value (the mean of the kept ones)
    torch.testing.assert_close(singular, singular.mean().expand(8), rtol=1e-5, atol=1e-5)
    # with every direction common (fraction 1), Iso-CTS is Iso-C
    torch.testing.assert_close(iso_cts_matrix(taus, 1.0), iso_c_matrix(taus), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name,fn,params",
    [
        ("iso_c_1.3", iso_c_merge, {"lam": 1.3}),
        ("iso_cts_1.0_0.8", iso_cts_merge, {"lam": 1.0, "common": 0.8}),
        ("iso_cts_1.5_0.5", iso_cts_merge, {"lam": 1.5, "common": 0.5}),
    ],
)
def test_matches_fusion_bench(name, fn, params):
    """FusionBench's iso_c / iso_cts (scaling factor applied to the update) on random tensors."""
    data = json.loads(REFERENCE.read_text())
    pre = {k: torch.tensor(v) for k, v in data["pre"].items()}
    fts = [{k: torch.tensor(v) for k, v in ft.items()} for ft in data["fts"]]
    out = fn(pre, fts, **params)
    for key, value in data[name].items():
        torch.testing.assert_close(out[key], torch.tensor(value), rtol=1e-5, atol=1e-5)
