import json
import math
from pathlib import Path

import pytest
import torch

from taskarith_core.fusion.pcb import pcb_merge, pcb_stats

K = "visual.transformer.resblocks.0.attn.in_proj_weight"
REFERENCE = Path(__file__).parent / "data" / "reference_pcb_breadcrumbs.json"


def state(*values, key=K):
    return {key: torch.tensor(values, dtype=torch.float32)}


def test_pcb_by_hand():
    pre = state(0.0, 0.0, 0.0, 0.0)
    # |tau_1| sorted 0,1,1,2: clamp bounds are ranks int(4 * 0.01) = 0 and int(4 * 0.99 - 1) = 2,
    # i.e. 0 and 1, so tau_1 -> (1, -1, 0, 1) and tau_2 -> (1, 1, -1, 0); Norm = |clamped|.
    fts = [state(2.0, -1.0, 0.0, 1.0), state(1.0, 1.0, -2.0, 0.0)]
    # intra_1 = exp(2 (1, 1, 0, 1)); inter_1 = (2t, 0, 0, t), t = tanh(1): beta_1 = (2te^2, 0, 0,
    # te^2), beta_2 = (2te^2, 0, te^2, 0). Ratio 0.75: low = rank int(4 * 0.25) = 1, i.e. 0, so
    # the scales are (1, 0, 0, 1/2) and (1, 0, 1/2, 0).
    stats = pcb_stats(pre, fts, 0.75)
    t, e2 = math.tanh(1.0), math.exp(2.0)
    assert stats.low == (0.0, 0.0) and stats.high == (1.0, 1.0)
    assert stats.beta_low == (0.0, 0.0)
    assert stats.beta_high == pytest.approx((2 * t * e2, 2 * t * e2), rel=1e-6)
    # merged = lambda sum_i clamped_i scale_i / sum_i scale_i: (2/2, 0, -0.5/0.5, 0.5/0.5)
    out = pcb_merge(pre, fts, ratio=0.75, lam=2.0)
    assert out[K].tolist() == pytest.approx([2.0, 0.0, -2.0, 2.0], abs=1e-6)


def test_pcb_statistics_are_global_over_all_tensors():
    g = torch.Generator().manual_seed(5)
    flat = torch.randn(3, 300, generator=g)
    pre_one = {K: torch.zeros(300)}
    fts_one = [{K: row} for row in flat]
    pre_two = {"a": torch.zeros(100), "b": torch.zeros(200)}
    fts_two = [{"a": row[:100], "b": row[100:]} for row in flat]
    one = pcb_merge(pre_one, fts_one, ratio=0.1, lam=1.0)[K]
    two = pcb_merge(pre_two, fts_two, ratio=0.1, lam=1.0)
    torch.testing.assert_close(torch.cat([two["a"], two["b"]]), one)
    # only about the top 10% of each task's balancing keeps a weight
    assert 0 < int((one != 0).sum()) <= 3 * 30 + 3


def test_pcb_matches_the_authors_code():
    """Outputs of the authors' published vision code (PCB + its merge step) on random tensors."""
    data = json.loads(REFERENCE.read_text())
    pre = {k: torch.tensor(v) for k, v in data["pre"].items()}
    fts = [{k: torch.tensor(v) for k, v in ft.items()} for ft in data["fts"]]
    for ratio, lam in [(0.05, 1.2), (0.3, 1.0)]:
        expected = data[f"pcb_{ratio}_{lam}"]
        out = pcb_merge(pre, fts, ratio=ratio, lam=lam)
        for key, value in expected.items():
            torch.testing.assert_close(out[key], torch.tensor(value), rtol=1e-5, atol=1e-6)
