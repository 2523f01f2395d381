"""Importance metrics, one registry table: name -> function of (pretrained, fine-tuned, context).

Tensor-only metrics (amp, magnitude, random) need no model. The model-based ones (lp, fisher) read
the task's data through a :class:`~taskarith_core.models.source.ModelSource`; ``lp_amp`` combines.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError
from .taskvec import StateDict, is_editable

__all__ = ["IMPORTANCE_METRICS", "ImportanceContext", "Metric", "compute_importance"]


@dataclass(frozen=True)
class ImportanceContext:
    """What a model-based metric needs beyond the two state dicts."""

    source: Any = None  #: a ModelSource, for lp / fisher
    task: str | None = None
    samples: int = 32
    seed: int = 0
    device: torch.device | str = "cpu"


@dataclass(frozen=True)
class Metric:
    fn: Callable[
        [Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], ImportanceContext], StateDict
    ]
    needs_model: bool
    summary: str


def _editable(state: Mapping[str, torch.Tensor]):
    return ((k, v) for k, v in state.items() if is_editable(v))


def amp(pre: Mapping[str, torch.Tensor], ft: Mapping[str, torch.Tensor], ctx: ImportanceContext):
    """STA Eq. 21: I = theta_t^2."""
    return {k: v.float() ** 2 for k, v in _editable(ft)}


def magnitude(pre, ft, ctx: ImportanceContext) -> StateDict:
    """|tau_t|: what TIES trims by."""
    return {k: (ft[k].float() - v.float()).abs() for k, v in _editable(pre)}


def random_importance(pre, ft, ctx: ImportanceContext) -> StateDict:
    """Uniform noise, seeded per (seed, task, tensor): the control every metric must beat."""
    out = {}
    for key, value in _editable(ft):
        seed = zlib.crc32(f"{ctx.seed}:{ctx.task}:{key}".encode())
        out[key] = torch.rand(value.shape, generator=torch.Generator().manual_seed(seed))
    return out


def _require_source(ctx: ImportanceContext, metric: str) -> None:
    if ctx.source is None or ctx.task is None:
        raise InputError(
            f"metric {metric!r} needs the model and the task's training data: pass a model source "
            "(the zoo or --manifest) and a task name, or use amp / magnitude / random"
        )
    if ctx.samples < 1:
        raise InputError(f"Ns={ctx.samples} samples is too few; use at least 1 (the paper uses 32)")


def lp(pre, ft, ctx: ImportanceContext) -> StateDict:
    """STA Eq. 12 on theta_t: sum over Ns samples of |theta * dL/dtheta|."""
    _require_source(ctx, "lp")
    from .models.importance import lp_importance

    return lp_importance(
        ctx.source, ctx.task, dict(ft), samples=ctx.samples, seed=ctx.seed, device=ctx.device
    )


def fisher(pre, ft, ctx: ImportanceContext) -> StateDict:
    """TaLoS Eq. 7: diagonal Fisher at theta_pre on task t's data, y from the model's prediction."""
    _require_source(ctx, "fisher")
    from .models.importance import fisher_importance

    return fisher_importance(
        ctx.source, ctx.task, dict(pre), samples=ctx.samples, seed=ctx.seed, device=ctx.device
    )


def lp_amp(pre, ft, ctx: ImportanceContext) -> StateDict:
    """STA Eq. 22: lp * amp, elementwise."""
    loss = lp(pre, ft, ctx)
    return {k: loss[k].float() * v for k, v in amp(pre, ft, ctx).items()}


IMPORTANCE_METRICS: dict[str, Metric] = {
    "lp": Metric(lp, True, "loss preservation |theta * grad L| summed over Ns samples (Eq. 12)"),
    "amp": Metric(amp, False, "amplitude theta^2 (Eq. 21)"),
    "lp_amp": Metric(lp_amp, True, "lp * amp (Eq. 22)"),
    "fisher": Metric(fisher, True, "diagonal Fisher at theta_pre (TaLoS Eq. 7)"),
    "magnitude": Metric(magnitude, False, "|tau| (TIES)"),
    "random": Metric(random_importance, False, "seeded uniform noise (control)"),
}


def compute_importance(
    metric: str,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    **context: Any,
) -> StateDict:
    """Importance of every editable tensor of task t under ``metric`` (see the table above)."""
    if metric not in IMPORTANCE_METRICS:
        raise InputError(
            f"unknown importance metric {metric!r}; choose one of {', '.join(IMPORTANCE_METRICS)}"
        )
    return IMPORTANCE_METRICS[metric].fn(pretrained, finetuned, ImportanceContext(**context))
