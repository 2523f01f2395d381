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


def test_magnitude_buckets_are_monotone_and_bounded():
    import struct

    from taskarith_core.select import (
        FINITE_BUCKETS,
        MAGNITUDE_BINS,
        bits_to_float,
        bucket_bounds,
        magnitude_buckets_,
    )

    gen = torch.Generator().manual_seed(3)
    values = torch.cat(
        [
            torch.randn(5000, generator=gen) * 10 ** torch.randint(-40, 38, (5000,), generator=gen),
            torch.tensor([0.0, -0.0, 1e-45, -1e-45, 3e-41, 1.0, -1.0, 3.4e38, float("inf")]),
        ]
    )
    buckets = magnitude_buckets_(values.clone())
    assert buckets.dtype == torch.int32 and 0 <= int(buckets.min()) < MAGNITUDE_BINS
    order = values.abs().argsort()
    assert bool((buckets[order].diff() >= 0).all())  # monotone in |x|
    assert set(buckets[values == 0].tolist()) == {0}  # zeros alone in bucket 0
    assert int(buckets[values.abs() > 0].min()) >= 1
    for value, bucket in zip(values.tolist(), buckets.tolist()):
        bits = struct.unpack("<I", struct.pack("<f", abs(value)))[0]
        low, high = bucket_bounds(bucket)
        assert low <= bits < high
        assert bits_to_float(bits) == abs(value)
    assert int(buckets[-1]) == FINITE_BUCKETS  # inf: the first bucket with a non-finite bound
