"""Command-line flags of merge and negation methods, derived from the method specs.

Every parameter of every registered method becomes one flag (``drop_rate`` -> ``--drop-rate``)
whose help lists the methods that take it with the paper's symbol and default, so a new method
gets its flags by being registered. Values are checked by the method's spec after parsing: the
error names the method's range, not a generic one.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from ..fusion.params import Param
from ..fusion.spec import MethodSpec

__all__ = ["add_method_flags", "method_help", "method_params"]


def method_help(table: Mapping[str, MethodSpec]) -> str:
    """``name: summary`` of every method, for ``--method``'s help."""
    return "; ".join(f"{name}: {spec.summary}" for name, spec in table.items())


def _by_name(table: Mapping[str, MethodSpec]) -> dict[str, list[tuple[str, Param]]]:
    """Each parameter name -> the (method, Param) pairs that use it, in registry order."""
    found: dict[str, list[tuple[str, Param]]] = {}
    for method, spec in table.items():
        for param in spec.params:
            found.setdefault(param.name, []).append((method, param))
    return found


def _flag_help(uses: list[tuple[str, Param]]) -> str:
    first = uses[0][1]
    same = all(
        (p.help, p.symbol, p.range_text()) == (first.help, first.symbol, first.range_text())
        for _, p in uses
    )
    if same:
        defaults = ", ".join(f"{method} {param.default}" for method, param in uses)
        text = f"{first.help} ({_where(first)}; default {defaults})"
    else:
        text = "; ".join(
            f"{method}: {param.help} ({_where(param)}; default {param.default})"
            for method, param in uses
        )
    return text.replace("%", "%%")


def _where(param: Param) -> str:
    return f"{param.symbol}: {param.range_text()}" if param.symbol else param.range_text()


def add_method_flags(parser: argparse.ArgumentParser, table: Mapping[str, MethodSpec]) -> None:
    """One optional flag per parameter name of the methods in ``table``."""
    for name, uses in _by_name(table).items():
        param = uses[0][1]
        parser.add_argument(
            param.flag,
            dest=f"param_{name}",
            nargs="+" if any(p.per_task for _, p in uses) else None,
            metavar={"int": "N", "float": "X"}.get(param.kind, "VALUE"),
            help=_flag_help(uses),
        )


def method_params(
    args: argparse.Namespace, table: Mapping[str, MethodSpec], method: str
) -> dict[str, Any]:
    """The parameter values given on the command line for ``method`` (strings; the spec checks
    and converts them). A flag the method does not take is refused, not silently ignored."""
    if method not in table:
        return {}  # the merge itself names the unknown method and the choices
    taken = {p.name for p in table[method].params}
    params: dict[str, Any] = {}
    for name, uses in _by_name(table).items():
        value = getattr(args, f"param_{name}", None)
        if value is None:
            continue
        if name not in taken:
            flags = ", ".join(p.flag for p in table[method].params) or "none"
            raise InputError(f"method {method} takes no {uses[0][1].flag}; its parameters: {flags}")
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else value
        params[name] = value
    return params
