"""Exact k-th smallest value over many float32 tensors, in bounded memory and linear time.

``torch.kthvalue`` uses quickselect, which degrades to quadratic time on sorted input or many equal
values (a TaLoS task vector is 90% zeros), and sorting a whole task vector costs 3x its size in
memory. A two-pass radix select over the float bit patterns avoids both: pass one counts the top 16
bits of every value, pass two the low 16 bits inside the one bucket that holds the k-th value.
The tensors are read through a callable so a streaming caller can re-read them from disk.

:func:`magnitude_buckets_` is the cheaper first pass for magnitudes (TIES's top-k): |x| needs no
sign handling, and exact zeros get a bucket of their own, so a bucket above 0 never holds a zero.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence

import torch

from .errors import InputError

__all__ = [
    "FINITE_BUCKETS",
    "MAGNITUDE_BINS",
    "bits_to_float",
    "bucket_bounds",
    "kth_smallest",
    "kth_smallest_many",
    "locate",
    "magnitude_buckets_",
]

_BINS = 1 << 16
_HALF = 1 << 15
_STEP = 15  # magnitude buckets: 8 mantissa bits of resolution
#: bucket 0 holds exact zeros, bucket j >= 1 the magnitudes with bits in ((j - 1) 2**15, j 2**15]
MAGNITUDE_BINS = (1 << 16) + 1
#: buckets below this one have finite bounds (inf and NaN fall in this bucket or above)
FINITE_BUCKETS = 0x7F800000 >> _STEP


def _ordered_bits(values: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns as int32 keys with the same order (negatives: low 31 bits flipped)."""
    bits = values.detach().to(torch.float32).reshape(-1).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _high(keys: torch.Tensor) -> torch.Tensor:
    return (keys >> 16) + _HALF  # arithmetic shift keeps the order; bucket in [0, 2**16)


def _key_to_float(high: int, low: int) -> float:
    ordered = (high - _HALF) * _BINS + low
    bits = ordered ^ 0x7FFFFFFF if ordered < 0 else ordered
    return struct.unpack("<f", struct.pack("<i", bits))[0]


def bits_to_float(bits: int) -> float:
    """The float32 value of a 32-bit pattern (exact as a Python float)."""
    return struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0]


def magnitude_buckets_(values: torch.Tensor) -> torch.Tensor:
    """Bucket of |x| for contiguous float32 ``values``, computed in place on their bits.

    ``values`` is destroyed: its storage now holds the int32 buckets, monotone in |x|. Four
    in-place integer operations and no allocation, because this runs over every task vector.
    """
    keys = values.view(torch.int32)
    keys.bitwise_and_(0x7FFFFFFF)  # |x|: positive bit patterns order like the magnitudes
    keys.sub_(1)  # 0 -> -1 -> bucket 0 below; bits (j - 1) 2**15 + 1 .. j 2**15 -> bucket j
    keys.bitwise_right_shift_(_STEP)
    return keys.add_(1)


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """Bit patterns ``[low, high)`` of the magnitudes in a bucket of :func:`magnitude_buckets_`."""
    if bucket == 0:
        return 0, 1
    return ((bucket - 1) << _STEP) + 1, (bucket << _STEP) + 1


def locate(counts: torch.Tensor, k: int) -> tuple[int, int]:
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
            keys = _ordered_bits(chunk.cpu())
            high_counts[index] += torch.bincount(_high(keys), minlength=_BINS)
            totals[index] += keys.numel()
    located = []
    for index, (k, total) in enumerate(zip(ks, totals)):
        if not 1 <= k <= total:
            raise InputError(f"rank k={k} is outside 1..{total}")
        located.append(locate(high_counts[index], k))
    low_counts = torch.zeros(len(ks), _BINS, dtype=torch.int64)
    for step in chunks():
        for index, chunk in enumerate(step):
            keys = _ordered_bits(chunk.cpu())
            in_bucket = keys[_high(keys) == located[index][0]]
            low_counts[index] += torch.bincount(in_bucket & (_BINS - 1), minlength=_BINS)
    values = []
    for index, (high, k_inside) in enumerate(located):
        low, _ = locate(low_counts[index], k_inside)
        values.append(_key_to_float(high, low))
    return values


def kth_smallest(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> float:
    """The k-th smallest (1-based) of all values yielded by ``chunks()`` (compared in float32)."""
    return kth_smallest_many(lambda: ([chunk] for chunk in chunks()), [k])[0]
