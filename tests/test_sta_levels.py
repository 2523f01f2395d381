"""The distinct p values of STA fusion: one per rank, each giving the masks of its whole step."""

import pytest
import torch

from taskarith_core.masks import lower_rank, sta_fusion_masks
from taskarith_core.sta_levels import distinct_p, distinct_p_text


@pytest.mark.parametrize("n", range(2, 21))
def test_one_value_per_rank_below_the_top(n):
    values = distinct_p(n)
    assert len(values) == n - 1 and values[0] == 0.0
    assert [lower_rank(n, p) for p in values] == list(range(n - 1))
    assert [lower_rank(n, p) for p in distinct_p(n, decimals=2)] == list(range(n - 1))


def test_eight_tasks_by_hand():
    assert distinct_p(8) == (0.0, 0.1429, 0.2858, 0.4286, 0.5715, 0.7143, 0.8572)
    assert distinct_p(8, decimals=2) == (0.0, 0.15, 0.29, 0.43, 0.58, 0.72, 0.86)
    assert distinct_p(3) == (0.0, 0.5)
    assert distinct_p(1) == ()


def test_every_p_gives_the_masks_of_a_distinct_value():
    gen = torch.Generator().manual_seed(0)
    imps = [{"w": torch.rand(200, generator=gen)} for _ in range(5)]
    reference = {p: sta_fusion_masks(imps, p) for p in distinct_p(5)}
    for p in (0.1, 0.2, 0.3, 0.7, 0.9, 0.99):
        below = max(v for v in distinct_p(5) if v <= p)
        got = sta_fusion_masks(imps, p)
        assert all(torch.equal(a["w"], b["w"]) for a, b in zip(got, reference[below]))
    firsts = [reference[p][0]["w"] for p in distinct_p(5)]
    assert all(not torch.equal(a, b) for a, b in zip(firsts, firsts[1:]))


def test_text_lists_the_values():
    assert distinct_p_text(3) == (
        "With 3 tasks only 2 distinct masks exist, at p = 0, 0.5 "
        "(a p between two of them gives the masks of the lower one)."
    )
    assert distinct_p_text(1) == ""
