import json
from pathlib import Path

import torch

from taskarith_core.fusion.breadcrumbs import breadcrumbs_mask, breadcrumbs_merge

K = "visual.transformer.resblocks.0.attn.in_proj_weight"
REFERENCE = Path(__file__).parent / "data" / "reference_pcb_breadcrumbs.json"


def test_mask_drops_the_outliers_then_keeps_the_largest_of_the_rest():
    tau = torch.tensor([5.0, -4.0, 3.0, -2.0, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01])
    # width 10: the int(10 * 0.1) = 1 largest (5) goes, then the int(10 * 0.3) = 3 largest stay
    mask = breadcrumbs_mask(tau, keep=0.3, outliers=0.1)
    assert mask.tolist() == [False, True, True, True] + [False] * 6


def test_mask_is_per_row_and_keeps_scalars():
    tau = torch.tensor([[1.0, 9.0, 3.0, 2.0], [-8.0, 0.5, 7.0, 6.0]])
    # per row of width 4: int(4 * 0.25) = 1 outlier, then int(4 * 0.5) = 2 kept
    mask = breadcrumbs_mask(tau, keep=0.5, outliers=0.25)
    assert mask.tolist() == [[False, False, True, True], [False, False, True, True]]
    assert breadcrumbs_mask(torch.tensor(3.0), 0.1, 0.1).item()


def test_merge_by_hand():
    pre = {K: torch.ones(4)}
    rows = [[1.0, 9.0, 3.0, 2.0], [-8.0, 0.5, 7.0, 6.0]]
    fts = [{K: torch.tensor(row) + 1} for row in rows]
    out = breadcrumbs_merge(pre, fts, keep=0.5, outliers=0.25, lam=0.5)
    # kept: (0, 0, 3, 2) and (0, 0, 7, 6); theta = 1 + 0.5 * (0, 0, 10, 8)
    assert out[K].tolist() == [1.0, 1.0, 6.0, 5.0]


def test_breadcrumbs_matches_the_authors_code():
    """Outputs of the authors' published TaskVectorMiddleKeep, summed and applied with alpha."""
    data = json.loads(REFERENCE.read_text())
    pre = {k: torch.tensor(v) for k, v in data["pre"].items()}
    fts = [{k: torch.tensor(v) for k, v in ft.items()} for ft in data["fts"]]
    for keep, outliers, lam in [(0.2, 0.1, 0.4), (0.5, 0.2, 1.0)]:
        expected = data[f"breadcrumbs_{keep}_{outliers}_{lam}"]
        out = breadcrumbs_merge(pre, fts, keep=keep, outliers=outliers, lam=lam)
        for key, value in expected.items():
            torch.testing.assert_close(out[key], torch.tensor(value), rtol=1e-6, atol=1e-6)
