"""Every event of the page, hardened in one place: values are checked before a callback sees them,
a mistake is one sentence, and a failed event leaves what the page showed untouched.

Gradio checks a control's value in its own preprocessing, before any callback runs; a string for
a slider or a 50 MB dropdown value then reaches the user as a bare "Error" or an unbounded echo.
:func:`guard_events` switches that preprocessing off and checks each raw value here instead, so
every rejected value gets a sentence that names the control and what it accepts. It also points
each event's progress display at one status line of its tab: Gradio draws its "Error" badge over
every component that shows progress, so only that line gets it and the chart, tables and inputs
stay visible.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection
from typing import Any

import gradio as gr

from ..errors import InputError, quote
from .common import user_errors

__all__ = ["TEXT_LIMIT", "check_value", "control_name", "guard_events", "guarded"]

#: characters of any text a control may send (a path, a task or tensor name)
TEXT_LIMIT = 4096
#: entries of a list a control may send (task pickers)
LIST_LIMIT = 1000


def control_name(component: Any) -> str:
    """How the page labels a control (what the user sees next to it)."""
    label = getattr(component, "label", None) or getattr(component, "elem_id", None)
    if not label and isinstance(getattr(component, "value", None), str):
        label = component.value  # buttons: their text
    return repr(str(label or type(component).__name__))


def _shown(value: Any) -> str:
    """A rejected value as the message repeats it (null is "nothing", not 'None')."""
    return "nothing" if value is None else quote(value)


def _number(name: str, value: Any, what: str) -> float:
    """A real number (JSON's numbers; not bool, NaN, infinity, text or null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} needs {what}; got {_shown(value)}")
    if not math.isfinite(value):
        raise InputError(f"{name} needs {what}; got {value}")
    return value


def _slider(component: gr.Slider, value: Any) -> float:
    low, high = component.minimum, component.maximum
    what = f"a number from {low:g} to {high:g}"
    number = _number(control_name(component), value, what)
    if not low <= number <= high:
        raise InputError(f"{control_name(component)} needs {what}; got {number:g}")
    return number


def _whole_or_number(component: gr.Number, value: Any) -> float | int:
    whole = component.precision == 0
    low, high = component.minimum, component.maximum
    what = "a whole number" if whole else "a number"
    if low is not None and high is not None:
        what += f" from {low:g} to {high:g}"
    elif low is not None:
        what += f" of at least {low:g}"
    name = control_name(component)
    number = _number(name, value, what)
    if whole and number != int(number):
        raise InputError(f"{name} needs {what}; got {number:g}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise InputError(f"{name} needs {what}; got {number:g}")
    return int(number) if whole else number


def _choice_values(component: Any) -> list[Any]:
    return [value for _, value in (getattr(component, "choices", None) or [])]


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} needs text; got {_shown(value)}")
    if len(value) > TEXT_LIMIT:
        raise InputError(f"{name} takes at most {TEXT_LIMIT} characters; got {len(value)}")
    return value


def _one_of(component: Any, value: Any, dynamic: bool) -> Any:
    """Radio / dropdown: one of its choices (a task picker: any name; the source checks it)."""
    name = control_name(component)
    dynamic = dynamic or getattr(component, "allow_custom_value", False)
    if value is None:
        if dynamic:
            return None
        raise InputError(f"{name} needs a choice; pick one of {_listing(component)}")
    if dynamic:
        return _text(name, value)
    if value not in _choice_values(component):
        raise InputError(f"{name} must be one of {_listing(component)}; got {quote(value)}")
    return value


def _listing(component: Any) -> str:
    values = [str(value) for value in _choice_values(component)]
    text = ", ".join(values)
    return text if len(text) <= 300 else ", ".join(values[:10]) + ", ..."


def _many_of(component: gr.CheckboxGroup, value: Any, dynamic: bool) -> list[Any]:
    name = control_name(component)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{name} needs a list of names; got {_shown(value)}")
    if len(value) > LIST_LIMIT:
        raise InputError(f"{name} takes at most {LIST_LIMIT} entries; got {len(value)}")
    for item in value:
        _text(name, item)
        if not dynamic and item not in _choice_values(component):
            raise InputError(f"{name} has no choice {quote(item)}; pick from {_listing(component)}")
    return list(value)


def _file_path(component: Any, value: Any) -> str | list[str] | None:
    """Files arrive as Gradio's file records (already checked to lie in its upload cache);
    callbacks take their paths on the server, a list of them for a multi-file control."""
    if value is None:
        return None
    many = getattr(component, "file_count", "single") != "single"
    records = value if many and isinstance(value, list) else [value]
    if many != isinstance(value, list):
        records = [None]
    paths = [record.get("path") if isinstance(record, dict) else None for record in records]
    if not all(isinstance(path, str) and path for path in paths):
        raise InputError(f"{control_name(component)} needs an uploaded file")
    return paths if many else paths[0]


def check_value(component: Any, value: Any, dynamic: bool = False) -> Any:
    """The value a callback gets for ``component``, or an InputError naming the control.

    ``dynamic``: the control's choices change per user (task pickers follow the loaded source),
    so only the type is checked here and the source says which names it has.
    """
    if isinstance(component, gr.State):
        return value
    if isinstance(component, gr.Slider):
        return _slider(component, value)
    if isinstance(component, gr.Number):
        return _whole_or_number(component, value)
    if isinstance(component, gr.Checkbox):
        if not isinstance(value, bool):
            raise InputError(f"{control_name(component)} needs true or false; got {_shown(value)}")
        return value
    if isinstance(component, gr.CheckboxGroup):
        return _many_of(component, value, dynamic)
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        return _one_of(component, value, dynamic)
    if isinstance(component, gr.Textbox):
        return "" if value is None else _text(control_name(component), value)
    if isinstance(component, (gr.UploadButton, gr.File)):
        return _file_path(component, value)
    try:  # any other control: Gradio's own conversion, its failure said in one sentence
        return component.preprocess(value)
    except Exception:  # noqa: BLE001 - a value the control cannot take is the user's input
        raise InputError(f"{control_name(component)} cannot take {quote(value)}") from None


def guarded(fn: Callable, inputs: list[Any], dynamic: Collection[Any] = ()) -> Callable:
    """``fn`` taking raw values: each is checked against its control first; every failure
    becomes one ``gr.Error`` sentence (:func:`~.common.user_errors`)."""
    dynamic_ids = {id(component) for component in dynamic}

    @functools.wraps(fn)
    def wrapper(*values: Any, **kwargs: Any) -> Any:
        checked = [
            check_value(component, value, id(component) in dynamic_ids)
            for component, value in zip(inputs, values)
        ]
        return fn(*checked, *values[len(inputs) :], **kwargs)

    return user_errors(wrapper)


def _tab_of(component: Any, tabs: dict[int, Any]) -> Any | None:
    block = component
    while block is not None:
        if id(block) in tabs:
            return tabs[id(block)]
        block = getattr(block, "parent", None)
    return None


def _status_of(block_fn: Any, blocks: dict, tabs: dict[int, Any], fallback: Any) -> Any:
    """The status line of the tab whose control started the event (a button, a slider); for an
    event started elsewhere, of the one tab every shown output lies in; else the page's."""
    for block_id, _ in block_fn.targets:
        line = _tab_of(blocks.get(block_id), tabs)
        if line is not None:
            return line
    shown = [c for c in block_fn.outputs if not isinstance(c, gr.State)]
    found = {id(line): line for line in (_tab_of(c, tabs) for c in shown)}
    return next(iter(found.values())) if len(found) == 1 and None not in found else fallback


def _updated_choices(demo: gr.Blocks) -> list[Any]:
    """Choice controls an event may give new choices (a run picker listing this user's runs):
    their choices differ per user, so only their values' types are checked here. Run-config
    uploads only set values (and the task pickers' choices, which are dynamic anyway)."""
    kinds = (gr.Radio, gr.Dropdown, gr.CheckboxGroup)
    return [
        component
        for block_fn in demo.fns.values()
        if not any(event == "upload" for _, event in block_fn.targets)
        for component in block_fn.outputs
        if isinstance(component, kinds)
    ]


def guard_events(
    demo: gr.Blocks, status_lines: dict[Any, Any], page_status: Any, dynamic: Collection[Any]
) -> None:
    """Harden every event of ``demo`` (call once, after all events are wired).

    ``status_lines`` maps each tab to the status line its events show progress (and a failure's
    badge) on; events of the source row use ``page_status``. A follow-up event (``.then``) runs only
    when the first succeeded, so one mistake raises one sentence.
    """
    tabs = {id(tab): line for tab, line in status_lines.items()}
    dynamic = [*dynamic, *_updated_choices(demo)]
    for block_fn in demo.fns.values():
        if block_fn.fn is None:
            continue
        if block_fn.preprocess:
            block_fn.fn = guarded(block_fn.fn, list(block_fn.inputs), dynamic)
            block_fn.preprocess = False
        if block_fn.show_progress_on is None:
            block_fn.show_progress_on = [_status_of(block_fn, demo.blocks, tabs, page_status)]
        if block_fn.trigger_after is not None:
            block_fn.trigger_only_on_success = True
