"""The coefficient grids of the disentanglement error: alpha1 x alpha2, and the papers' presets."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import InputError
from ..limits import XI_POINTS

__all__ = ["XI_PRESETS", "XiGrid"]


@dataclass(frozen=True)
class XiGrid:
    """``points`` equispaced coefficients on [lo, hi] for each of alpha1 and alpha2."""

    points: int = 15
    lo: float = -2.0
    hi: float = 2.0

    def validate(self) -> XiGrid:
        if not isinstance(self.points, int) or self.points <= 0:
            raise InputError(f"xi grid points={self.points}: give a positive whole number")
        if self.points > XI_POINTS:
            raise InputError(
                f"xi grid points={self.points} is more than the limit {XI_POINTS} per axis; "
                f"use at most {XI_POINTS}"
            )
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise InputError(f"xi alpha range [{self.lo}, {self.hi}] is not finite")
        if self.lo >= self.hi:
            raise InputError(
                f"xi alpha range [{self.lo}, {self.hi}] is reversed or empty; give lo < hi, "
                "e.g. --alpha-range -2 2"
            )
        return self

    def alphas(self) -> list[float]:
        if self.points == 1:
            return [float(self.lo)]
        step = (self.hi - self.lo) / (self.points - 1)
        return [round(self.lo + i * step, 10) for i in range(self.points)]


#: attention-only paper Appendix A (15x15 on [-2, 2]^2) and TaLoS Fig. 2 (20x20 on [-3, 3]^2).
XI_PRESETS: dict[str, XiGrid] = {
    "ortiz": XiGrid(15, -2.0, 2.0),
    "talos": XiGrid(20, -3.0, 3.0),
}
