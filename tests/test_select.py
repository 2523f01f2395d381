import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.select import kth_smallest


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kth_smallest_matches_sort_across_chunks(seed):
    gen = torch.Generator().manual_seed(seed)
    chunks = [torch.randn(n, generator=gen) * 10 ** (seed - 1) for n in (17, 300, 1)]
    chunks.append(torch.tensor([0.0, -0.0, 0.0, float("inf"), -3.5, -3.5]))
    ordered = torch.cat(chunks).sort().values
    for k in [1, 2, 50, 161, 317, ordered.numel()]:
        assert kth_smallest(lambda: chunks, k) == ordered[k - 1].item()


def test_many_ties_and_sorted_input_are_fast_and_exact():
    zeros = torch.zeros(2_000_000)
    ramp = torch.arange(1_000_000, dtype=torch.float32).flip(0)
    assert kth_smallest(lambda: [zeros, ramp], 2_000_000) == 0.0
    assert kth_smallest(lambda: [zeros, ramp], 2_000_001) == 0.0  # the ramp's own 0
    assert kth_smallest(lambda: [zeros, ramp], 2_500_000) == 499_999.0


def test_rank_out_of_range():
    with pytest.raises(InputError, match="outside"):
        kth_smallest(lambda: [torch.ones(3)], 4)
