"""Linear-interpolation quantiles at any tensor size.

``torch.quantile`` refuses a reduction over more than 2**24 elements, and a real model's largest
tensors can be bigger. :func:`linear_quantile` is STA Eq. 15-16 -- L_p = 1 + (N-1) p,
T = I*_floor(L_p) + (I*_(floor(L_p)+1) - I*_floor(L_p)) (L_p - floor(L_p)) -- and calls
``torch.quantile(..., interpolation="linear")`` itself whenever torch accepts the size (so results
are bit-identical there). Above that it finds the two order statistics by an exact radix select
(:mod:`taskarith_core.select`) and interpolates between them, which agrees with torch's formula to
float rounding (about 1e-7).
"""

from __future__ import annotations

import math

import torch

from .errors import InputError
from .select import kth_smallest

__all__ = ["TORCH_QUANTILE_LIMIT", "check_quantile", "linear_quantile"]

TORCH_QUANTILE_LIMIT = 1 << 24


def check_quantile(q: float) -> float:
    """p must lie in [0, 1] (NaN included in the refusal)."""
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise InputError(f"quantile p={q} is outside [0, 1]; choose p between 0 and 1")
    return q


def _select(x: torch.Tensor, q: float, dim: int) -> torch.Tensor:
    """Order statistics without torch.quantile's size limit, interpolated as Eq. 16."""
    n = x.shape[dim]
    rank = q * (n - 1)
    below = math.floor(rank)
    above = min(math.ceil(rank), n - 1)
    weight = torch.tensor(rank - below, dtype=x.dtype, device=x.device)
    if dim == 0 and x.dim() == 1 and x.dtype == torch.float32:
        low = kth_smallest(lambda: [x], below + 1)
        high = low if above == below else kth_smallest(lambda: [x], above + 1)
        return torch.lerp(
            torch.tensor(low, device=x.device), torch.tensor(high, device=x.device), weight
        )
    ordered = torch.sort(x, dim=dim).values
    return torch.lerp(ordered.select(dim, below), ordered.select(dim, above), weight)


def linear_quantile(
    x: torch.Tensor, q: float, dim: int | None = None, *, limit: int = TORCH_QUANTILE_LIMIT
) -> torch.Tensor:
    """The q-quantile of ``x`` over all elements, or along ``dim`` (which is then removed)."""
    q = check_quantile(q)
    if not x.is_floating_point():
        x = x.float()
    if x.numel() == 0:
        raise InputError("cannot take a quantile of an empty tensor")
    if dim is None:
        x, dim = x.reshape(-1), 0
    if x.shape[dim] <= limit:
        return torch.quantile(x, q, dim=dim, interpolation="linear")
    return _select(x, q, dim)
