"""Exact TIES straight from files, reading each file twice instead of three times.

TIES trims every task vector at its own global top-k magnitude, so a streaming merge needs N
thresholds before it can merge the first tensor: an exact radix select reads everything twice and
the merge a third time. Here the first read histograms |tau| into 2**16 buckets
(:func:`taskarith_core.select.magnitude_buckets_`), which fixes the bucket holding each threshold.
The merge read then knows that every magnitude above that bucket is kept and every one below it
dropped; only those inside it are undecided. They are kept provisionally, and wherever any task
has one, all N trimmed values and theta_pre are recorded. After the read the records hold every
task's whole threshold bucket, so the exact thresholds are read off them, and the recorded
positions are merged again with the same rule and patched into the output before it is written.

Records cost N + 1 values and an index per position. When heavily tied magnitudes (one value
filling the bucket) would take more than :data:`BUDGET_BYTES`, the engine instead finds the exact
thresholds with a histogram inside the bucket before merging: three reads, as a plain radix select.
A threshold of exactly 0 needs no records: bucket 0 holds only zeros, which stay zero either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..select import (
    FINITE_BUCKETS,
    MAGNITUDE_BINS,
    bits_to_float,
    bucket_bounds,
    locate,
    magnitude_buckets_,
)
from ..taskvec import is_editable
from ._per_tensor import work_dtype
from .ties import CHUNK, Scratch, disjoint_mean_, ties_thresholds, trim_

__all__ = ["BUDGET_BYTES", "TiesStream"]

#: most memory the undecided positions may take before the engine reads the files once more
BUDGET_BYTES = 256 << 20
_INSIDE = 1 << 15  # bit patterns per magnitude bucket

#: one tensor's undecided positions: flat indices, trimmed values [N, m], theta_pre values
Records = tuple[np.ndarray, np.ndarray, np.ndarray]


class TiesStream:
    """TIES over lazily read inputs: ``merged(key)`` for every tensor name, then ``finish(out)``.

    ``pretrained`` and ``finetuned`` are mappings that read a tensor when indexed (for example
    views of files); the constructor reads them all once for the histograms.
    """

    def __init__(
        self,
        pretrained: Mapping[str, torch.Tensor],
        finetuned: Sequence[Mapping[str, torch.Tensor]],
        *,
        k: float,
        lam: float,
        budget_bytes: int | None = None,
    ) -> None:
        self._pre, self._fts, self._lam = pretrained, list(finetuned), lam
        self._buffers: list[torch.Tensor] = []
        self._scratch: dict[np.dtype, Scratch] = {}
        self._records: dict[str, Records] = {}
        #: task -> (rank of the threshold inside its bucket, magnitudes in the bucket)
        self._pending: dict[int, tuple[int, int]] = {}
        #: how many times the inputs are read in all: 2, or 3 when the records would not fit
        self.reads = 2
        #: positions merged again with the exact thresholds by ``finish``
        self.patched = 0
        budget = BUDGET_BYTES if budget_bytes is None else budget_bytes
        self._lows, self._highs = self._plan(k, budget)

    def _plan(self, k: float, budget: int) -> tuple[list[float], list[float]]:
        """Provisional ``[low, high)`` per task from one read; low == high once exact."""
        n = len(self._fts)
        counts, total = self._histograms()
        if counts is None:  # float64 weights: the float32 radix select that ties_merge uses
            self.reads = 3
            exact = ties_thresholds(self._pre, self._fts, k)
            return exact, list(exact)
        kept = int(round(k * total))
        if kept <= 0:  # nothing is kept
            return [float("inf")] * n, [float("inf")] * n
        located = [locate(counts[t], total - kept + 1) for t in range(n)]
        buckets = [bucket for bucket, _ in located]
        recorded = sum(int(counts[t, b]) for t, b in enumerate(buckets) if b > 0)
        if max(buckets) >= FINITE_BUCKETS or recorded * (4 * (n + 1) + 8) > budget:
            self.reads = 3
            exact = self._refine(located)
            return exact, list(exact)
        lows, highs = [], []
        for t, (bucket, rank) in enumerate(located):
            low, high = bucket_bounds(bucket)
            if bucket > 0:
                self._pending[t] = (rank, int(counts[t, bucket]))
                lows.append(bits_to_float(low))
                highs.append(bits_to_float(high))
            else:
                lows.append(0.0)
                highs.append(0.0)
        return lows, highs

    def _read(self, task: int, key: str) -> torch.Tensor:
        """Task ``task``'s tensor, used at once: from a reused buffer when the source has one."""
        source = self._fts[task]
        peek = getattr(source, "peek", None)
        return peek(key) if peek is not None else source[key]

    def _tau(self, slot: int, finetuned: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """finetuned - theta_pre in the working dtype, into a buffer reused across tensors."""
        size = base.numel()
        if slot == len(self._buffers):
            self._buffers.append(torch.empty(0))
        buffer = self._buffers[slot]
        if buffer.dtype != base.dtype or buffer.numel() < size:
            buffer = self._buffers[slot] = torch.empty(max(size, buffer.numel()), dtype=base.dtype)
        return torch.sub(finetuned.reshape(-1), base, out=buffer[:size])

    def _editable(self):
        """(key, theta_pre, theta_pre flat in the working dtype) of every editable tensor."""
        for key in self._pre:
            pre = self._pre[key]
            if is_editable(pre):
                yield key, pre, pre.reshape(-1).to(work_dtype(pre))

    def _histograms(self) -> tuple[torch.Tensor | None, int]:
        """Read one: per task, how many magnitudes fall in each bucket."""
        counts = torch.zeros(len(self._fts), MAGNITUDE_BINS, dtype=torch.int64)
        total = 0
        for key, _pre, base in self._editable():
            if base.dtype != torch.float32:
                return None, 0
            for t in range(len(self._fts)):
                buckets = magnitude_buckets_(self._tau(0, self._read(t, key), base))
                tally = torch.bincount(buckets, minlength=MAGNITUDE_BINS)
                if tally[FINITE_BUCKETS:].any():  # inf / NaN, or a finite overflow
                    _ = self._fts[t][key]  # the checked read names the file if it holds them
                counts[t] += tally
            total += base.numel()
        return counts, total

    def _refine(self, located: list[tuple[int, int]]) -> list[float]:
        """The exact thresholds from one more read: a histogram inside each threshold bucket."""
        lows = [bucket_bounds(bucket)[0] for bucket, _ in located]
        counts = torch.zeros(len(located), _INSIDE, dtype=torch.int64)
        if any(bucket > 0 for bucket, _ in located):
            for key, _pre, base in self._editable():
                for t in range(len(self._fts)):
                    if located[t][0] > 0:
                        bits = self._tau(0, self._read(t, key), base).view(torch.int32)
                        bits.bitwise_and_(0x7FFFFFFF).sub_(lows[t])
                        inside = bits[(bits >= 0) & (bits < _INSIDE)]
                        counts[t] += torch.bincount(inside, minlength=_INSIDE)
        limits = []
        for t, (bucket, rank) in enumerate(located):
            offset = locate(counts[t], rank)[0] if bucket > 0 else 0
            limits.append(bits_to_float(lows[t] + offset) if bucket > 0 else 0.0)
        return limits

    def _merge_flat(
        self, taus: list[np.ndarray], base: np.ndarray, lows: list[float], highs: list[float]
    ) -> tuple[np.ndarray, Records | None]:
        """delta of one flat tensor (``taus`` destroyed), and its undecided positions."""
        if base.dtype not in self._scratch:
            self._scratch[base.dtype] = Scratch(base.dtype, len(taus))
        scratch = self._scratch[base.dtype]
        lows_, highs_ = scratch.scalars(lows), scratch.scalars(highs)
        lam_ = scratch.scalars([self._lam])[0]
        delta = np.empty_like(base)
        found = []
        for start in range(0, len(delta), CHUNK):
            chunk = [values[start : start + CHUNK] for values in taus]
            undecided = trim_(chunk, lows_, highs_, scratch)
            if undecided is not None and undecided.any():
                where = np.flatnonzero(undecided)
                found.append((where + start, np.stack([values[where] for values in chunk])))
            disjoint_mean_(chunk, lam_, delta[start : start + CHUNK], scratch)
        if not found:
            return delta, None
        where = np.concatenate([w for w, _ in found])
        return delta, (where, np.concatenate([v for _, v in found], axis=1), base[where])

    def merged(self, key: str) -> torch.Tensor:
        """theta_pre + delta of one tensor name, exact except at positions ``finish`` patches."""
        pre = self._pre[key]
        if not is_editable(pre):
            return pre
        base = pre.reshape(-1).to(work_dtype(pre))
        taus = [self._tau(t, self._read(t, key), base).numpy() for t in range(len(self._fts))]
        delta, records = self._merge_flat(taus, base.numpy(), self._lows, self._highs)
        if records is not None:
            self._records[key] = records
        return torch.from_numpy(delta).add_(base).to(pre.dtype).reshape(pre.shape)

    def _exact_limits(self) -> list[float]:
        """Each pending threshold: the rank-th smallest magnitude recorded inside its bucket."""
        limits = list(self._lows)
        for t, (rank, expected) in self._pending.items():
            column = [values[t] for _, values, _ in self._records.values()]
            magnitudes = np.abs(np.concatenate(column)) if column else np.empty(0, np.float32)
            low, high = np.float32(self._lows[t]), np.float32(self._highs[t])
            inside = magnitudes[(magnitudes >= low) & (magnitudes < high)]
            if inside.size != expected:
                raise InputError("an input file changed while it was being merged; run again")
            limits[t] = float(np.partition(inside, rank - 1)[rank - 1])
        return limits

    def finish(self, out: Mapping[str, torch.Tensor]) -> None:
        """Merge the recorded positions with the exact thresholds, in place in ``out``."""
        limits = self._exact_limits()
        for key, (where, values, base) in self._records.items():
            delta, _ = self._merge_flat(list(values), base, limits, limits)
            patched = torch.from_numpy(delta).add_(torch.from_numpy(base))
            target = out[key].view(-1)
            target[torch.from_numpy(where)] = patched.to(target.dtype)
            self.patched += len(where)
        self._records.clear()
