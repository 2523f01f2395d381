"""Merge and negation methods: one function each, listed in one registry table each.

Adding a method is one function, one line in the table below and one test. :func:`merge` and
:func:`negate` are the boundary: they validate hyperparameters (``InputError``) and dispatch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError
from ..taskvec import StateDict, check_same_layout
from .arithmetic import masked_arithmetic, task_arithmetic, task_arithmetic_negate
from .consensus import consensus_merge
from .dare import dare_merge
from .sta import sta_merge, sta_negate
from .sta_stream import StaStream
from .ties import ties_merge, ties_thresholds
from .ties_stream import TiesStream

__all__ = [
    "MERGE_METHODS",
    "NEGATION_METHODS",
    "Method",
    "check_params",
    "merge",
    "negate",
]


@dataclass(frozen=True)
class Method:
    """A registered method: the function, its defaults (paper values) and what else it reads."""

    fn: Callable[..., StateDict]
    defaults: dict[str, Any]
    summary: str
    #: per-task side inputs the caller must provide: "importances", "importance" or "masks"
    needs: str | None = None
    #: global statistics a streaming driver computes in a first pass: name -> fn(pre, fts, params)
    global_stats: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: a file-streaming engine used instead of global_stats + fn on the CPU:
    #: fn(pre, fts, params, side inputs per task) -> an object with ``merged(key) -> tensor``
    #: and ``finish(out)`` (patches ``out`` in place)
    streamer: Callable[..., Any] | None = None


MERGE_METHODS: dict[str, Method] = {
    "sta": Method(
        sta_merge,
        {"p": 0.7},
        "STA crossmasking, no coefficient (Eq. 13-19)",
        "importances",
        streamer=lambda pre, fts, params, imps: StaStream(pre, fts, imps, p=params["p"]),
    ),
    "task_arithmetic": Method(task_arithmetic, {"lam": 0.4}, "theta_pre + lambda * sum tau"),
    "ties": Method(
        ties_merge,
        {"k": 0.2, "lam": 1.0},
        "TIES: top-k trim, sign election, disjoint mean",
        global_stats={
            "thresholds": lambda pre, fts, params: ties_thresholds(pre, fts, params["k"])
        },
        streamer=lambda pre, fts, params, _sides: TiesStream(
            pre, fts, k=params["k"], lam=params["lam"]
        ),
    ),
    "dare": Method(
        dare_merge, {"rate": 0.5, "lam": 0.4, "seed": 0}, "DARE drop + rescale, then TA"
    ),
    "consensus": Method(
        consensus_merge, {"lam": 0.4, "tall_lambda": 0.4, "k": 2}, "Consensus / TALL masks"
    ),
    "masked_arithmetic": Method(
        masked_arithmetic, {"lam": 1.0}, "theta_pre + lambda * sum M_t * tau_t", "masks"
    ),
}

NEGATION_METHODS: dict[str, Method] = {
    "sta": Method(
        sta_negate, {"p": 0.9}, "STA forgetting, per-tensor quantile (Eq. 20)", "importance"
    ),
    "task_arithmetic": Method(task_arithmetic_negate, {"lam": 1.0}, "theta_base - lambda * tau"),
}


def _unit(name: str, value: float, upper_open: bool = False) -> None:
    ok = 0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise InputError(f"{name}={value} is outside {interval}; choose a value in {interval}")


def check_params(method: str, params: Mapping[str, Any], n_tasks: int) -> None:
    """Refuse out-of-range hyperparameters with a sentence that names the value and the range."""
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{name}={value} is not a finite number; give a real value")
    if "p" in params:
        _unit("p", float(params["p"]))
    if "rate" in params:
        _unit("drop rate", float(params["rate"]), upper_open=True)
    if method == "ties" and not 0.0 < float(params["k"]) <= 1.0:
        raise InputError(f"TIES k={params['k']} must be in (0, 1]: the fraction of entries kept")
    if method == "consensus":
        k = params["k"]
        if float(k) != int(k) or not 1 <= int(k) <= n_tasks:
            raise InputError(f"consensus k={k} must be a whole number of tasks in [1, {n_tasks}]")
        lams = params["tall_lambda"]
        for lt in [lams] if isinstance(lams, int | float) else lams:
            if not math.isfinite(float(lt)) or float(lt) < 0:
                raise InputError(f"TALL lambda_t={lt} must be a finite number >= 0")


def _resolve(table: dict[str, Method], kind: str, name: str, params: Mapping[str, Any]):
    if name not in table:
        raise InputError(f"unknown {kind} method {name!r}; choose one of {', '.join(table)}")
    method = table[name]
    unknown = set(params) - set(method.defaults) - {method.needs} - set(method.global_stats)
    if unknown:
        raise InputError(f"{kind} method {name!r} takes no parameter {sorted(unknown)[0]!r}")
    return method, {**method.defaults, **params}


def merge(
    name: str,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    **params: Any,
) -> StateDict:
    """Merge N fine-tuned state dicts into one with the registered method ``name``."""
    method, full = _resolve(MERGE_METHODS, "merge", name, params)
    if len(finetuned) < 2:
        raise InputError(f"a merge needs at least 2 fine-tuned models, got {len(finetuned)}")
    check_params(name, {k: v for k, v in full.items() if k != method.needs}, len(finetuned))
    for index, ft in enumerate(finetuned):
        check_same_layout(pretrained, ft, other_name=f"fine-tuned model {index + 1}")
    if method.needs:
        side = full.get(method.needs)
        if side is None or len(side) != len(finetuned):
            raise InputError(
                f"method {name!r} needs one {method.needs[:-1]} file per fine-tuned model"
            )
        for index, extra in enumerate(side):
            check_same_layout(
                pretrained, extra, other_name=f"{method.needs} {index + 1}", check_dtype=False
            )
    return method.fn(pretrained, finetuned, **full)


def negate(
    name: str,
    base: Mapping[str, torch.Tensor],
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    **params: Any,
) -> StateDict:
    """Remove task ``finetuned - pretrained`` from ``base`` with the registered method ``name``."""
    method, full = _resolve(NEGATION_METHODS, "negation", name, params)
    check_params(name, {k: v for k, v in full.items() if k != method.needs}, 1)
    check_same_layout(pretrained, finetuned)
    check_same_layout(pretrained, base, other_name="base model")
    if method.needs and full.get(method.needs) is None:
        raise InputError(f"negation method {name!r} needs an importance file for the task")
    if method.needs:
        check_same_layout(
            pretrained, full[method.needs], other_name="importance", check_dtype=False
        )
    return method.fn(base, pretrained, finetuned, **full)
