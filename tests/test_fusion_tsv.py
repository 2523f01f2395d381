import json
from pathlib import Path

import torch

from taskarith_core.fusion.tsv import tsv_matrix, tsv_merge

W = "visual.transformer.resblocks.0.mlp.c_fc.weight"
B = "visual.transformer.resblocks.0.mlp.c_fc.bias"
REFERENCE = Path(__file__).parent / "data" / "reference_svd_merges.json"


def test_each_task_keeps_its_top_singular_directions_by_hand():
    # tau_1 = diag(3, 1), tau_2 = diag(0.5, 2): T = 2 tasks keep int(2 / 2) = 1 direction each,
    # e1 (sigma 3) and e2 (sigma 2); they are already orthonormal, so the update is diag(3, 2).
    taus = [torch.diag(torch.tensor([3.0, 1.0])), torch.diag(torch.tensor([0.5, 2.0]))]
    torch.testing.assert_close(tsv_matrix(taus), torch.diag(torch.tensor([3.0, 2.0])))


def test_whitening_makes_the_kept_directions_orthonormal():
    # rank-1 tasks along e1 and (e1 + e2)/sqrt(2): after whitening the update's singular values
    # are exactly the kept ones (3 and 2), which a plain sum (2.0x) would not give.
    a = torch.tensor([1.0, 1.0]) / 2**0.5
    e1 = torch.tensor([1.0, 0.0])
    taus = [3 * torch.outer(e1, e1), 2 * torch.outer(a, a)]
    singular = torch.linalg.svdvals(tsv_matrix(taus))
    torch.testing.assert_close(singular, torch.tensor([3.0, 2.0]))
    assert not torch.allclose(torch.linalg.svdvals(taus[0] + taus[1]), torch.tensor([3.0, 2.0]))


def test_merge_averages_other_tensors_and_scales_by_alpha():
    pre = {W: torch.zeros(2, 2), B: torch.ones(2)}
    fts = [
        {W: torch.diag(torch.tensor([3.0, 1.0])), B: torch.tensor([2.0, 3.0])},
        {W: torch.diag(torch.tensor([0.5, 2.0])), B: torch.tensor([4.0, 1.0])},
    ]
    out = tsv_merge(pre, fts, lam=0.5)
    torch.testing.assert_close(out[W], torch.diag(torch.tensor([1.5, 1.0])))
    assert out[B].tolist() == [1 + 0.5 * 2.0, 1 + 0.5 * 1.0]  # mean tau (2, 1), times 0.5


def test_matches_fusion_bench():
    """FusionBench's TSV-M (compute_and_sum_svd_mem_reduction, alpha 1) on random tensors."""
    data = json.loads(REFERENCE.read_text())
    pre = {k: torch.tensor(v) for k, v in data["pre"].items()}
    fts = [{k: torch.tensor(v) for k, v in ft.items()} for ft in data["fts"]]
    out = tsv_merge(pre, fts, lam=1.0)
    for key, value in data["tsv_m_1.0"].items():
        torch.testing.assert_close(out[key], torch.tensor(value), rtol=1e-5, atol=1e-5)
