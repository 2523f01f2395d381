"""Merge and negation methods: one file each with its function(s) and spec, listed in two tables.

A method registers with one file and one line: see :mod:`taskarith_core.fusion.spec` for the
steps. :func:`merge` and :func:`negate` are the boundary: they check hyperparameters against the
method's spec (``InputError``) and dispatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import InputError, quote
from ..taskvec import StateDict, check_same_layout
from . import (
    adamerging,
    arithmetic,
    average,
    breadcrumbs,
    consensus,
    dare,
    iso,
    pcb,
    sta,
    ties,
    tsv,
)
from .params import Param
from .spec import MethodSpec

__all__ = [
    "MERGE_METHODS",
    "NEGATION_METHODS",
    "Method",
    "MethodSpec",
    "Param",
    "check_params",
    "merge",
    "negate",
]

#: an older name of MethodSpec
Method = MethodSpec

#: command-line name -> spec, in the order menus list them
MERGE_METHODS: dict[str, MethodSpec] = {
    "sta": sta.SPEC,
    "task_arithmetic": arithmetic.SPEC,
    "ties": ties.SPEC,
    "dare": dare.SPEC,
    "consensus": consensus.SPEC,
    "masked_arithmetic": arithmetic.MASKED_SPEC,
    "average": average.SPEC,
    "pcb": pcb.SPEC,
    "breadcrumbs": breadcrumbs.SPEC,
    "tsv_m": tsv.SPEC,
    "iso_c": iso.SPEC,
    "iso_cts": iso.CTS_SPEC,
    "adamerging": adamerging.SPEC,
}

NEGATION_METHODS: dict[str, MethodSpec] = {
    "sta": sta.NEGATION_SPEC,
    "task_arithmetic": arithmetic.NEGATION_SPEC,
}


def check_params(
    method: str, params: Mapping[str, Any], n_tasks: int, *, negation: bool = False
) -> dict[str, Any]:
    """``params`` with defaults filled in and every value checked by the method's spec; an
    InputError names the value and the allowed range."""
    table, kind = (NEGATION_METHODS, "negation") if negation else (MERGE_METHODS, "merge")
    return _spec(table, kind, method).check(params, n_tasks)


def _spec(table: Mapping[str, MethodSpec], kind: str, name: str) -> MethodSpec:
    if name not in table:
        raise InputError(f"unknown {kind} method {quote(name)}; choose one of {', '.join(table)}")
    return table[name]


def _resolve(
    table: Mapping[str, MethodSpec], kind: str, name: str, params: Mapping[str, Any], n_tasks: int
) -> tuple[MethodSpec, dict[str, Any]]:
    spec = _spec(table, kind, name)
    unknown = spec.unknown(params)
    if unknown:
        raise InputError(f"{kind} method {name!r} takes no parameter {unknown[0]!r}")
    return spec, spec.check(params, n_tasks)


def merge(
    name: str,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    **params: Any,
) -> StateDict:
    """Merge N fine-tuned state dicts into one with the registered method ``name``."""
    if len(finetuned) < 2:
        raise InputError(f"a merge needs at least 2 fine-tuned models, got {len(finetuned)}")
    method, full = _resolve(MERGE_METHODS, "merge", name, params, len(finetuned))
    for index, ft in enumerate(finetuned):
        check_same_layout(pretrained, ft, other_name=f"fine-tuned model {index + 1}")
    if method.needs and method.needs != "adaptation":  # an Adaptation is checked by its method
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
    method, full = _resolve(NEGATION_METHODS, "negation", name, params, 1)
    check_same_layout(pretrained, finetuned)
    check_same_layout(pretrained, base, other_name="base model")
    if method.needs and full.get(method.needs) is None:
        raise InputError(f"negation method {name!r} needs an importance file for the task")
    if method.needs:
        check_same_layout(
            pretrained, full[method.needs], other_name="importance", check_dtype=False
        )
    return method.fn(base, pretrained, finetuned, **full)
