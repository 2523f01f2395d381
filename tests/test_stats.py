"""Bootstrap intervals against closed-form binomial ones; paired comparisons with known answers."""

import math

import numpy as np
import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.stats import (
    Interval,
    bootstrap_mean,
    correct_fraction,
    mean_over_seeds,
    paired_difference,
)

Z95 = 1.959964


def _hits(n: int, k: int, seed: int = 0) -> np.ndarray:
    """n images of which exactly k are correct, in a seeded order."""
    out = np.zeros(n, dtype=bool)
    out[np.random.default_rng(seed).permutation(n)[:k]] = True
    return out


def _wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


@pytest.mark.parametrize("n,k", [(1000, 620), (400, 300), (2000, 1900)])
def test_one_task_matches_wilson_interval(n, k):
    got = bootstrap_mean({"t": _hits(n, k)}, resamples=20000)
    low, high = _wilson(k, n)
    assert got.mean == pytest.approx(k / n)
    # the bootstrap percentile interval and Wilson's agree to a fraction of a point at these sizes
    assert got.low == pytest.approx(low, abs=0.004)
    assert got.high == pytest.approx(high, abs=0.004)


def test_mean_over_tasks_matches_normal_interval():
    tasks = {"a": (800, 560), "b": (500, 450), "c": (1200, 300)}
    correct = {t: _hits(n, k, i) for i, (t, (n, k)) in enumerate(tasks.items())}
    got = bootstrap_mean(correct, resamples=20000)
    mean = sum(k / n for n, k in tasks.values()) / 3
    var = sum((k / n) * (1 - k / n) / n for n, k in tasks.values()) / 9
    assert got.mean == pytest.approx(mean)
    assert got.low == pytest.approx(mean - Z95 * math.sqrt(var), abs=0.003)
    assert got.high == pytest.approx(mean + Z95 * math.sqrt(var), abs=0.003)


def test_weights_scale_each_task():
    correct = {"a": _hits(100, 50), "b": _hits(100, 80)}
    assert correct_fraction(correct, {"a": 2.0, "b": 1.0}) == pytest.approx((1.0 + 0.8) / 2)
    got = bootstrap_mean(correct, {"a": 2.0, "b": 1.0})
    assert got.low < got.mean < got.high


def test_seeded_and_accepts_tensors():
    correct = {"a": torch.tensor(_hits(300, 200)), "b": torch.tensor(_hits(77, 30))}
    assert bootstrap_mean(correct, seed=3) == bootstrap_mean(correct, seed=3)
    assert bootstrap_mean(correct, seed=3, resamples=300) != bootstrap_mean(
        correct, seed=4, resamples=300
    )


def test_all_correct_has_no_spread():
    got = bootstrap_mean({"a": np.ones(50, dtype=bool)})
    assert (got.mean, got.low, got.high) == (1.0, 1.0, 1.0)


def test_identical_runs_cannot_tell():
    run = {"a": _hits(500, 300)}
    got = paired_difference(run, run)
    assert got.difference == Interval(0.0, 0.0, 0.0)
    assert got.verdict == "cannot tell"


def test_clearly_better_run_holds_and_reverse_does_not():
    worse = _hits(1000, 600)
    better = worse.copy()
    better[np.flatnonzero(~worse)[:100]] = True  # 100 more images right, none lost
    got = paired_difference({"a": better}, {"a": worse})
    assert got.difference.mean == pytest.approx(0.1)
    assert got.verdict == "holds" and got.images == 1000
    assert paired_difference({"a": worse}, {"a": better}).verdict == "does not hold"


def test_paired_interval_matches_closed_form():
    # 120 images only A gets right, 80 only B: difference 0.04, variance (pa + pb - d^2) / n
    n = 1000
    a = np.zeros(n, dtype=bool)
    b = np.zeros(n, dtype=bool)
    a[:120] = True
    b[120:200] = True
    a[200:700] = b[200:700] = True
    got = paired_difference({"t": a}, {"t": b}, resamples=20000)
    sd = math.sqrt((0.12 + 0.08 - 0.04**2) / n)
    assert got.difference.mean == pytest.approx(0.04)
    assert got.difference.low == pytest.approx(0.04 - Z95 * sd, abs=0.002)
    assert got.difference.high == pytest.approx(0.04 + Z95 * sd, abs=0.002)
    assert got.verdict == "holds"


def test_swaps_that_cancel_cannot_tell():
    # A and B each get 50 images the other misses: equal means, differing images
    a = np.zeros(400, dtype=bool)
    b = np.zeros(400, dtype=bool)
    a[:50] = True
    b[50:100] = True
    got = paired_difference({"t": a}, {"t": b})
    assert got.difference.mean == 0.0
    assert got.difference.low < 0 < got.difference.high
    assert got.verdict == "cannot tell"


def test_mismatched_runs_are_refused():
    with pytest.raises(InputError, match="same images"):
        paired_difference({"t": _hits(10, 5)}, {"t": _hits(11, 5)})
    with pytest.raises(InputError, match="same tasks"):
        paired_difference({"t": _hits(10, 5)}, {"u": _hits(10, 5)})


def test_interval_text():
    assert Interval(0.6248, 0.612, 0.6371).text() == "62.48 [61.20, 63.71]"
    assert Interval(0.6248, 0.612, 0.6371).ends() == "[61.20, 63.71]"


def test_many_distinct_values_resample_indices_like_counts():
    # 40 distinct per-image scores: the index path, against the normal interval of their mean
    values = np.repeat(np.linspace(0, 1, 40), 25)
    got = bootstrap_mean({"t": values}, resamples=20000)
    sd = values.std() / math.sqrt(values.size)
    assert got.low == pytest.approx(0.5 - Z95 * sd, abs=0.003)
    assert got.high == pytest.approx(0.5 + Z95 * sd, abs=0.003)


def test_mean_over_seeds_keeps_the_pairing():
    a = [{"t": _hits(600, 400, s)} for s in range(3)]
    b = [{"t": run["t"].copy()} for run in a]
    for run in b:
        run["t"][np.flatnonzero(run["t"])[:60]] = False  # every seed loses 60 of its images
    mean_a, mean_b = mean_over_seeds(a), mean_over_seeds(b)
    assert mean_a["t"].mean() == pytest.approx(400 / 600)
    got = paired_difference(mean_a, mean_b)
    assert got.difference.mean == pytest.approx(0.1) and got.verdict == "holds"
