"""Exact linear-interpolation quantiles at any tensor size.

``torch.quantile`` refuses inputs over 16M elements, and a real model's largest tensors (or N
of them stacked along the task axis) are bigger. :func:`linear_quantile` gives the same numbers as
``torch.quantile(..., interpolation="linear")`` -- STA Eq. 15-16: L_p = 1 + (N-1) p,
T = I*_floor(L_p) + (I*_(floor(L_p)+1) - I*_floor(L_p)) (L_p - floor(L_p)) -- without that limit.
"""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["linear_quantile"]


def _check_q(q: float) -> float:
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise InputError(f"quantile p={q} is outside [0, 1]; choose p between 0 and 1")
    return q


def _ranks(q: float, n: int, like: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """Rank below, rank above and interpolation weight, computed as torch does (in x's dtype)."""
    rank = torch.tensor(q, dtype=like.dtype) * (n - 1)
    below = int(rank.floor().item())
    above = min(below + 1, n - 1) if rank.item() > below else below
    return below, above, rank - below


def linear_quantile(x: torch.Tensor, q: float, dim: int | None = None) -> torch.Tensor:
    """The q-quantile of ``x`` (over all elements, or along ``dim`` which is then removed)."""
    q = _check_q(q)
    if not x.is_floating_point():
        x = x.float()
    if x.numel() == 0:
        raise InputError("cannot take a quantile of an empty tensor")
    if dim is None:
        flat = x.reshape(-1)
        below, above, weight = _ranks(q, flat.numel(), flat)
        low = torch.kthvalue(flat, below + 1).values
        high = low if above == below else torch.kthvalue(flat, above + 1).values
        return torch.lerp(low, high, weight.to(flat.device))
    dim = dim % x.dim()
    n = x.shape[dim]
    below, above, weight = _ranks(q, n, x)
    ordered = torch.sort(x, dim=dim).values
    low = ordered.select(dim, below)
    high = ordered.select(dim, above)
    return torch.lerp(low, high, weight.to(x.device))
