"""A merge or negation method as data: its function, parameters, side inputs and how it streams.

Everything that runs, checks or shows a method (``merge``/``negate``, the file-streaming engine,
the CLI flags, run-config fields, the page's controls, the sweep and ``reproduce`` method lists)
reads it from one :class:`MethodSpec`, so a method states each fact about itself once.

Adding a method:

1. one file in ``taskarith_core/fusion/`` with its function(s) and a module-level ``SPEC =
   MethodSpec(...)`` (the parameters as :class:`~taskarith_core.fusion.params.Param`, the paper
   reference, the side input it reads, ``linear_in_lambda`` and ``streams``);
2. one line in ``MERGE_METHODS`` (or ``NEGATION_METHODS``) in ``taskarith_core/fusion/__init__.py``
   mapping its command-line name to that ``SPEC``;
3. its tests in ``tests/test_fusion_<file>.py``: hand-computed values on tiny tensors, and the
   paper's equation cited in the function's docstring.

The function is called as ``fn(pretrained, finetuned, **params, **side)`` (a merge) or
``fn(base, pretrained, finetuned, **params, **side)`` (a negation), on whole state dicts or on
one tensor name at a time (a streamed merge), so unless ``streams`` says otherwise it must treat
each tensor name on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..taskvec import StateDict
from .params import Param

__all__ = ["SIDE_INPUTS", "STREAMS", "MethodSpec"]

#: what a method reads besides the checkpoints: per-task importances (STA fusion), per-task masks
#: (masked arithmetic), the forgotten task's importance (STA negation), or unlabeled images and a
#: model forward to adapt its coefficients on ("adaptation")
SIDE_INPUTS = (None, "importances", "masks", "importance", "adaptation")

#: how a file-streaming merge can run the method with bounded memory:
#: "element" - each output entry reads only the same entry of the inputs: one tensor at a time;
#: "global" - as "element" after a first pass over all tensors for global statistics
#: (``global_stats``, e.g. TIES's model-wide top-k thresholds);
#: "tensor" - each output tensor needs the whole of its input tensors (an SVD, a quantile)
STREAMS = ("element", "global", "tensor")


@dataclass(frozen=True, eq=False)
class MethodSpec:
    """One registered method. ``params`` are its hyperparameters in the order shown to users."""

    fn: Callable[..., StateDict]
    params: tuple[Param, ...]
    #: one line for menus and ``--help``
    summary: str
    #: the paper and the equation or algorithm the function implements
    reference: str
    #: a short name for tables and figure legends
    short: str
    needs: str | None = None
    #: theta = theta_pre + lam * X(other params): a sweep over ``lam`` computes X once
    linear_in_lambda: bool = False
    streams: str = "element"
    #: global statistics a streaming driver computes in a first pass: name -> fn(pre, fts, params)
    global_stats: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    #: a file-streaming engine used instead of global_stats + fn on the CPU:
    #: fn(pre, fts, params, side inputs per task) -> an object with ``merged(key) -> tensor``
    #: and ``finish(out)`` (patches ``out`` in place)
    streamer: Callable[..., Any] | None = None
    #: rules between parameters or on the task count: fn(checked params, n_tasks) raises InputError
    check_more: Callable[[Mapping[str, Any], int], None] | None = None
    #: the lambda values the papers' protocols search for this method (empty: {0.05, ..., 1.0})
    lam_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.short}: two parameters share a name")
        if self.needs not in SIDE_INPUTS:
            raise ValueError(f"{self.short}: needs must be one of {SIDE_INPUTS}")
        if self.streams not in STREAMS:
            raise ValueError(f"{self.short}: streams must be one of {STREAMS}")
        if self.linear_in_lambda and "lam" not in names:
            raise ValueError(f"{self.short}: linear in lambda but has no 'lam' parameter")
        if (self.streams == "global") != bool(self.global_stats):
            raise ValueError(f"{self.short}: streams='global' goes with global_stats")

    @property
    def defaults(self) -> dict[str, Any]:
        """The paper's values of every parameter."""
        return {p.name: p.default for p in self.params}

    def param(self, name: str) -> Param:
        """The parameter called ``name`` (KeyError when the method has none)."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def check(self, params: Mapping[str, Any], n_tasks: int, owner: str = "") -> dict[str, Any]:
        """Defaults filled in and every value checked and converted, or one InputError.

        Keys that are not parameters (side inputs, precomputed global statistics) pass through."""
        full = {**self.defaults, **params}
        for p in self.params:
            full[p.name] = _check_value(p, full[p.name], n_tasks, owner)
        if self.check_more is not None:
            self.check_more(full, n_tasks)
        return full

    def unknown(self, params: Mapping[str, Any]) -> list[str]:
        """Names in ``params`` this method does not take, sorted."""
        known = {p.name for p in self.params} | {self.needs} | set(self.global_stats)
        return sorted(set(params) - known)


def _check_value(param: Param, value: Any, n_tasks: int, owner: str) -> Any:
    """A value, or (for a per-task parameter) one value per task, checked by the Param."""
    if param.per_task and isinstance(value, list | tuple):
        if len(value) != n_tasks:
            raise InputError(
                f"{owner + ' ' if owner else ''}{param.name} has {len(value)} values for "
                f"{n_tasks} tasks; give one value, or one per task"
            )
        return [param.check(v, owner) for v in value]
    return param.check(value, owner)
