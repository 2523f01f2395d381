"""Exact k-th smallest value over many float32 tensors, in bounded memory and linear time.

``torch.kthvalue`` uses quickselect, which degrades to quadratic time on sorted input or many equal
values (a TaLoS task vector is 90% zeros), and sorting a whole task vector costs 3x its size in
memory. A two-pass radix select over the float bit patterns avoids both: pass one counts the top 16
bits of every value, pass two the low 16 bits inside the one bucket that holds the k-th value.
The tensors are read through a callable so a streaming caller can re-read them from disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from .errors import InputError

__all__ = ["kth_smallest", "kth_smallest_many"]

_BINS = 1 << 16
_SIGN_FLIP = 0x7FFFFFFF
_OFFSET = 1 << 31


def _ordered_keys(values: torch.Tensor) -> torch.Tensor:
    """Map float32 values to int64 keys in [0, 2**32) with the same order."""
    bits = values.detach().to(torch.float32).reshape(-1).view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ _SIGN_FLIP, bits)
    return ordered.to(torch.int64) + _OFFSET


def _key_to_float(key: int) -> float:
    signed = key - _OFFSET
    bits = signed ^ _SIGN_FLIP if signed < 0 else signed
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32).item())


def _locate(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """Bucket holding the k-th (1-based) value, and k's rank inside that bucket."""
    cumulative = torch.cumsum(counts, 0)
    bucket = int(torch.searchsorted(cumulative, torch.tensor([k], dtype=cumulative.dtype)).item())
    before = int(cumulative[bucket - 1].item()) if bucket > 0 else 0
    return bucket, k - before


def kth_smallest_many(
    chunks: Callable[[], Iterable[Sequence[torch.Tensor]]], ks: Sequence[int]
) -> list[float]:
    """k-th smallest value of each of several streams read together.

    ``chunks()`` yields, step by step, one tensor per stream (e.g. one tensor name of N task
    vectors), so a caller that reads N files tensor by tensor reads each file only twice in all.
    """
    ks = list(ks)
    high_counts = torch.zeros(len(ks), _BINS, dtype=torch.int64)
    totals = [0] * len(ks)
    for step in chunks():
        for index, chunk in enumerate(step):
            keys = _ordered_keys(chunk.cpu())
            high_counts[index] += torch.bincount(keys >> 16, minlength=_BINS)
            totals[index] += keys.numel()
    located = []
    for index, (k, total) in enumerate(zip(ks, totals)):
        if not 1 <= k <= total:
            raise InputError(f"rank k={k} is outside 1..{total}")
        located.append(_locate(high_counts[index], k))
    low_counts = torch.zeros(len(ks), _BINS, dtype=torch.int64)
    for step in chunks():
        for index, chunk in enumerate(step):
            keys = _ordered_keys(chunk.cpu())
            in_bucket = keys[(keys >> 16) == located[index][0]]
            low_counts[index] += torch.bincount(in_bucket & (_BINS - 1), minlength=_BINS)
    values = []
    for index, (high, k_inside) in enumerate(located):
        low, _ = _locate(low_counts[index], k_inside)
        values.append(_key_to_float((high << 16) | low))
    return values


def kth_smallest(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> float:
    """The k-th smallest (1-based) of all values yielded by ``chunks()`` (compared in float32)."""
    return kth_smallest_many(lambda: ([chunk] for chunk in chunks()), [k])[0]
