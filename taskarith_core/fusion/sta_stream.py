"""STA fusion straight from files, in cache-sized column chunks (bit-identical to ``sta_merge``).

The in-memory rule stacks the N normalised importances and runs a full odd-even transposition
network over whole tensors: dozens of passes over [N, numel] float32, each one out of cache. Here
every tensor is cut into chunks of :data:`CHUNK` elements; per chunk the N normalised rows, the
selection network and the mask-and-accumulate all stay in cache. The network is a Batcher odd-even
merge sort pruned to the comparators (and their min or max halves) that reach the one order
statistic the mask needs, compiled once into buffer-to-buffer steps. Every element-wise operation
is the in-memory rule's own (same operands, same order, same dtype), so results are equal bit for
bit: normalisation ``(I - low) / span`` in float32, ``tau * mask`` summed task by task, then
``theta_pre + total``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..masks import NOISE_FLOOR, lower_rank, selection_network
from ..taskvec import is_editable
from ._per_tensor import work_dtype

__all__ = ["CHUNK", "StaStream"]

#: elements per column chunk: N rows of normalised importances and the network's scratch fit in L2
CHUNK = 1 << 15


class StaStream:
    """STA fusion over lazily read inputs: ``merged(key)`` per tensor name; ``finish`` is a no-op.

    ``pretrained``, ``finetuned`` and ``importances`` are mappings that read a tensor when indexed;
    those with a ``peek(key)`` method (an unchecked read into a reused buffer) are read that way
    and checked here: importances by their min / max, the fine-tuned models by the output's sum.
    """

    def __init__(
        self,
        pretrained: Mapping[str, torch.Tensor],
        finetuned: Sequence[Mapping[str, torch.Tensor]],
        importances: Sequence[Mapping[str, torch.Tensor]],
        *,
        p: float,
    ) -> None:
        self._pre, self._fts, self._imps = pretrained, list(finetuned), list(importances)
        n = len(self._fts)
        steps, self._result, count = selection_network(n, lower_rank(n, p))
        self._steps = [
            (np.maximum if is_max else np.minimum, a, b, out) for is_max, a, b, out in steps
        ]
        self._buffers = np.empty((count, CHUNK), dtype=np.float32)
        self._zeros = np.zeros(CHUNK, dtype=np.float32)
        self._mask = np.empty(CHUNK, dtype=bool)
        self._work: dict[np.dtype, np.ndarray] = {}

    @staticmethod
    def _peek(source: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
        peek = getattr(source, "peek", None)
        return peek(key) if peek is not None else source[key]

    def _normaliser(self, t: int, key: str) -> tuple | None:
        """Task t's flat float32 importance, Eq. 13's (low, span) and the noise threshold (None
        when no entry is below it); None for a constant tensor (as ``masks.minmax_normalise``)."""
        tensor = self._peek(self._imps[t], key).reshape(-1)
        if tensor.dtype != torch.float32:
            tensor = tensor.float()  # as the in-memory rule: float64 rounds to float32 first
        low, high = (np.float32(v.item()) for v in torch.aminmax(tensor))  # exact, NaN-propagating
        if not (np.isfinite(low) and np.isfinite(high)):
            _ = self._imps[t][key]  # NaN or inf: the checked read refuses it
        span = np.float32(high - low)
        if not (span > 0) or not np.isfinite(span):
            return None
        floor = np.float32(max(abs(low), abs(high)) * np.float32(NOISE_FLOOR))
        quiet = bool((tensor.abs() <= float(floor)).any())
        return tensor.numpy(), low, span, floor if quiet else None

    def _finetuned(self, t: int, key: str, work: torch.dtype) -> np.ndarray:
        """Task t's flat fine-tuned tensor in the working dtype (unchecked: see ``merged``)."""
        tensor = self._peek(self._fts[t], key).reshape(-1)
        return tensor.to(work).numpy()  # a no-op unless fp16 / bf16: numpy's fp16 math is slow

    def _chunk(self, start: int, stop: int, norms, fts, base: np.ndarray, dest: np.ndarray):
        """dest[start:stop] = base + sum_t tau_t * (I'_t > lower) over one column chunk."""
        size = stop - start
        views = [row[:size] for row in self._buffers]
        for t, normaliser in enumerate(norms):
            if normaliser is None:
                views[t] = self._zeros[:size]
            else:
                values, low, span, floor = normaliser
                np.subtract(values[start:stop], low, out=views[t], dtype=np.float32)
                np.divide(views[t], span, out=views[t])
                if floor is not None:
                    np.putmask(views[t], np.abs(values[start:stop]) <= floor, 0.0)
        for fn, a, b, out in self._steps:
            fn(views[a], views[b], out=views[out])
        lower, mask = views[self._result], self._mask[:size]
        pre = base[start:stop]
        work = self._work[base.dtype]
        tau, total = work[0, :size], dest[start:stop]
        for t, ft in enumerate(fts):
            np.subtract(ft[start:stop], pre, out=tau, dtype=base.dtype)
            np.greater(views[t], lower, out=mask)
            if t == 0:
                np.multiply(tau, mask, out=total)
            else:
                np.multiply(tau, mask, out=tau)
                np.add(total, tau, out=total)
        np.add(pre, total, out=total)

    def merged(self, key: str) -> torch.Tensor:
        """theta_pre + sum_t M_t * tau_t of one tensor name (non-float tensors are copied)."""
        pre = self._pre[key]
        if not is_editable(pre) or pre.numel() == 0:
            return pre
        work = work_dtype(pre)
        base = pre.reshape(-1).to(work).numpy()
        if base.dtype not in self._work:
            self._work[base.dtype] = np.empty((1, CHUNK), dtype=base.dtype)
        norms = [self._normaliser(t, key) for t in range(len(self._imps))]
        fts = [self._finetuned(t, key, work) for t in range(len(self._fts))]
        dest = np.empty_like(base)
        with np.errstate(all="ignore"):  # inf * 0 and overflow: found below, as torch would
            for start in range(0, base.size, CHUNK):
                self._chunk(start, min(start + CHUNK, base.size), norms, fts, base, dest)
        merged = torch.from_numpy(dest)
        if not bool(torch.isfinite(merged.sum())):
            # NaN / inf in any theta_t reaches the output (tau * 0 is NaN): one sum checks all N;
            # the checked reads name the file (finite inputs that overflowed are let through)
            for source in self._fts:
                _ = source[key]
        return merged.to(pre.dtype).reshape(pre.shape)

    def finish(self, out: Mapping[str, torch.Tensor]) -> None:
        """Nothing to patch: every tensor is exact when ``merged`` returns it."""
