"""Uncertainty of mean accuracies: a paired bootstrap over test images.

A mean accuracy over tasks is a mean of per-task fractions measured on a few hundred or thousand
test images each; two merges that differ by half a point may differ by chance of which images were
drawn. Here every mean comes with a 95% interval, and two runs evaluated on the SAME images are
compared image by image (paired), which is much tighter than comparing two separate intervals.

The bootstrap resamples each task's test images with replacement (tasks independently, so each task
keeps its size) and recomputes the mean over tasks. Drawing n images with replacement from n images
of which k are correct yields a Binomial(n, k/n) number of correct ones, and for a pair of runs the
counts of (only A correct, only B correct, other) images are Multinomial; we sample those counts
directly, which is the same bootstrap without materialising index arrays. Seeded: the same inputs
give the same interval on every machine.

No torch import: the page imports this before the engine loads (tensors are read via numpy).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    "paired_difference",
    "verdict",
]

#: confidence level of every interval the product prints
LEVEL = 0.95
#: bootstrap resamples; the interval's ends move by about 0.05 points between seeds at this size
RESAMPLES = 4000
#: what a paired comparison says about "A is better than B"
VERDICTS = ("holds", "does not hold", "cannot tell")

Correct = Mapping[str, Any]  # task -> per-image correctness (bool array or tensor [N])


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

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Comparison:
    """A minus B on the same images: the difference of means with its interval, and the verdict
    on "A is better than B"."""

    difference: Interval
    verdict: str
    images: int


def _as_bool(values: Any, task: str) -> np.ndarray:
    array = np.asarray(values.cpu() if hasattr(values, "cpu") else values)
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"task {task!r}: per-image correctness must be a non-empty 1-D array")
    return array.astype(bool)


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
    return float(sum(wi * _as_bool(correct[t], t).mean() for wi, t in zip(w, tasks)))


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
        hits = _as_bool(correct[task], task)
        n = hits.size
        samples += wi * rng.binomial(n, hits.mean(), size=resamples) / n
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
    w = _weights(tasks, weights)
    rng = np.random.default_rng(seed)
    samples = np.zeros(resamples)
    mean = images = 0
    for wi, task in zip(w, tasks):
        x, y = _as_bool(a[task], task), _as_bool(b[task], task)
        if x.size != y.size:
            raise InputError(
                f"task {task!r}: the runs were evaluated on {x.size} and {y.size} images; compare "
                "runs evaluated on the same images"
            )
        n = x.size
        only = np.array([(x & ~y).sum(), (~x & y).sum()], dtype=float) / n
        counts = rng.multinomial(n, [only[0], only[1], max(1 - only.sum(), 0.0)], size=resamples)
        samples += wi * (counts[:, 0] - counts[:, 1]) / n
        mean += wi * (only[0] - only[1])
        images += n
    difference = _interval(float(mean), samples, level)
    return Comparison(difference, verdict(difference), images)
