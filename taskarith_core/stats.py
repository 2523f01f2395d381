"""Uncertainty of mean accuracies: a paired bootstrap over test images.

A mean accuracy over tasks is a mean of per-task fractions measured on a few hundred or thousand
test images each; two merges that differ by half a point may differ by chance of which images were
drawn. Here every mean comes with a 95% interval, and two runs evaluated on the SAME images are
compared image by image (paired), which is much tighter than comparing two separate intervals.

The bootstrap resamples each task's test images with replacement (tasks independently, so each task
keeps its size) and recomputes the mean over tasks. A per-image score takes few distinct values
(correct or not; for a pair of runs -1, 0 or 1; averaged over 3 seeds, multiples of 1/3), and
drawing n images with replacement draws Multinomial(n, frequencies) counts of those values: we
sample the counts directly, the same bootstrap without index arrays of n x resamples. Seeded: the
same inputs give the same interval on every machine.

No torch import: the page imports this before the engine loads (tensors are read via numpy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "Comparison",
    "Interval",
    "LEVEL",
    "RESAMPLES",
    "VERDICTS",
    "bootstrap_mean",
    "correct_fraction",
    "mean_over_seeds",
    "paired_difference",
    "verdict",
]

#: confidence level of every interval the product prints
LEVEL = 0.95
#: bootstrap resamples; the interval's ends move by about 0.05 points between seeds at this size
RESAMPLES = 4000
#: what a paired comparison says about "A is better than B"
VERDICTS = ("holds", "does not hold", "cannot tell")

Correct = Mapping[str, Any]  # task -> per-image correctness (bool or [0, 1] array or tensor [N])
_LEVELS = 16  # up to this many distinct per-image values, resample their counts


@dataclass(frozen=True)
class Interval:
    """A mean (as measured) and the ends of its bootstrap interval, all fractions."""

    mean: float
    low: float
    high: float
    level: float = LEVEL

    def text(self, scale: float = 100.0, digits: int = 2) -> str:
        """``62.48 [61.20, 63.71]``: the mean and its interval in the unit the caller prints."""
        f = f"{{:.{digits}f}}"
        return f"{f.format(scale * self.mean)} [{f.format(scale * self.low)}, " + (
            f"{f.format(scale * self.high)}]"
        )

    def ends(self, scale: float = 100.0, digits: int = 2) -> str:
        """``[61.20, 63.71]``: the interval alone, in the unit the caller prints."""
        return f"[{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Comparison:
    """A minus B on the same images: the difference of means with its interval, and the verdict
    on "A is better than B"."""

    difference: Interval
    verdict: str
    images: int


def _as_values(values: Any, task: str) -> np.ndarray:
    array = np.asarray(values.cpu() if hasattr(values, "cpu") else values)
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"task {task!r}: per-image correctness must be a non-empty 1-D array")
    return array.astype(np.float64)


def _resampled_means(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of one task's per-image values."""
    n = values.size
    levels, counts = np.unique(values, return_counts=True)
    if levels.size <= _LEVELS:
        return rng.multinomial(n, counts / n, size=resamples) @ levels / n
    out = np.empty(resamples)
    for start in range(0, resamples, 256):  # many distinct values: resample indices in blocks
        picks = rng.integers(0, n, size=(min(256, resamples - start), n))
        out[start : start + len(picks)] = values[picks].mean(axis=1)
    return out


def _weights(tasks: list[str], weights: Mapping[str, float] | None) -> np.ndarray:
    if weights is None:
        return np.full(len(tasks), 1.0 / len(tasks))
    missing = [t for t in tasks if t not in weights]
    if missing:
        raise InputError(f"no weight for tasks {missing}; give one per task")
    return np.array([float(weights[t]) for t in tasks]) / len(tasks)


def correct_fraction(correct: Correct, weights: Mapping[str, float] | None = None) -> float:
    """The mean over tasks of (weight x per-task accuracy): what the interval is around."""
    tasks = list(correct)
    if not tasks:
        raise InputError("no tasks to average; evaluate at least one task")
    w = _weights(tasks, weights)
    return float(sum(wi * _as_values(correct[t], t).mean() for wi, t in zip(w, tasks)))


def _interval(mean: float, samples: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return Interval(mean, float(low), float(high), level)


def bootstrap_mean(
    correct: Correct,
    weights: Mapping[str, float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """Mean over tasks of per-task accuracy with its bootstrap interval over each task's images.

    ``weights`` (task -> factor, e.g. 1 / fine-tuned accuracy for normalised accuracy) scale each
    task's accuracy; they are held fixed, so a normalised interval ignores the fine-tuned model's
    own sampling noise."""
    tasks = list(correct)
    mean = correct_fraction(correct, weights)
    w = _weights(tasks, weights)
    rng = np.random.default_rng(seed)
    samples = np.zeros(resamples)
    for wi, task in zip(w, tasks):
        samples += wi * _resampled_means(_as_values(correct[task], task), rng, resamples)
    return _interval(mean, samples, level)


def verdict(difference: Interval) -> str:
    """ "holds" when the interval of A - B lies above zero, "does not hold" when below, else
    "cannot tell" (the images measured cannot separate the two)."""
    if difference.low > 0:
        return VERDICTS[0]
    if difference.high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def paired_difference(
    a: Correct,
    b: Correct,
    weights: Mapping[str, float] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Comparison:
    """Run A minus run B on the same test images, resampled together (paired bootstrap)."""
    tasks = list(a)
    if sorted(tasks) != sorted(b):
        raise InputError(
            f"the two runs cover different tasks ({tasks} vs {list(b)}); compare runs "
            "on the same tasks"
        )
    differences, images = {}, 0
    for task in tasks:
        x, y = _as_values(a[task], task), _as_values(b[task], task)
        if x.size != y.size:
            raise InputError(
                f"task {task!r}: the runs were evaluated on {x.size} and {y.size} images; compare "
                "runs evaluated on the same images"
            )
        differences[task] = x - y
        images += x.size
    difference = bootstrap_mean(differences, weights, resamples, seed, level)
    return Comparison(difference, verdict(difference), images)


def mean_over_seeds(runs: Sequence[Correct]) -> dict[str, np.ndarray]:
    """Per image, the fraction of runs (e.g. 3 importance seeds) that get it right: a run's
    mean over seeds that can still be compared image by image."""
    if not runs:
        raise InputError("no runs to average; give at least one")
    return {t: np.mean([_as_values(r[t], t) for r in runs], axis=0) for t in runs[0]}
