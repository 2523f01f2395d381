"""One page control per method parameter, built from its ``Param``.

A registered method gets its controls on the Merge tab without code here: a bounded number is a
slider over its range, an unbounded one a number box, a choice a dropdown, a flag a checkbox. The
label carries the paper's symbol and the help line, so the page and ``--help`` say the same.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..fusion.params import Param

__all__ = ["param_control", "slider_range"]

#: where a slider of a parameter without an upper bound ends (lambda, TALL lambda)
OPEN_HIGH = 2.0


def slider_range(param: Param) -> tuple[float, float, float] | None:
    """(minimum, maximum, step) of the parameter's slider, or None for a number box."""
    if param.kind == "int":
        if param.low is None or param.high is None:
            return None
        return float(param.low), float(param.high), 1.0
    if param.high is None and param.low_open:
        return None  # a rate like a learning rate spans decades: a number box
    low = 0.0 if param.low is None else float(param.low)
    high = OPEN_HIGH if param.high is None else float(param.high)
    if param.low is None and param.default < 0:
        return None
    step = param.step or (0.05 if param.high is None else 0.01)
    if param.high_open:
        high -= step  # the slider must not offer the excluded end
    if param.low_open:
        low = min(low + step, float(param.default))
    return min(low, float(param.default)), max(high, float(param.default)), step


def param_control(param: Param, value: Any, elem_id: str, visible: bool = True) -> Any:
    """The Gradio component that edits ``param``, starting at ``value``."""
    shown = param.symbol and param.symbol != param.name
    label = f"{param.name} ({param.symbol})" if shown else param.name
    common = {"label": label, "info": param.help, "elem_id": elem_id, "visible": visible}
    if param.kind == "choice":
        return gr.Dropdown(list(param.choices), value=value, **common)
    if param.kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    span = slider_range(param)
    if span is None:
        return gr.Number(value, precision=0 if param.kind == "int" else None, **common)
    low, high, step = span
    return gr.Slider(low, high, value=value, step=step, **common)
