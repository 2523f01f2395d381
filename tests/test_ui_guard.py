"""Every event of the page: values checked before a callback, one sentence per mistake, progress
(and Gradio's failure badge) on one status line per tab, nothing written for a rejected value."""

from __future__ import annotations

import copy
import math
import tempfile

import gradio as gr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskarith_core.errors import MESSAGE_LIMIT, InputError
from taskarith_core.service.sources import clear_explorers, register_source
from taskarith_core.ui.common import config_from_source
from taskarith_core.ui.guard import TEXT_LIMIT, check_value, control_name
from taskarith_core.ui.page import build_page
from tests.tiny_source import make_tiny_source

TASKS = ["task0", "task1", "task2"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page over a registered tiny source, never served: its events are called directly."""
    root = tmp_path_factory.mktemp("tiny_guard")
    settings_ = {"source": "zoo", "paradigm": "full", "zoo_root": str(root), "device": "cpu"}
    register_source(config_from_source(settings_), make_tiny_source(root, n_tasks=3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKARITH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield build_page(settings_)
    clear_explorers()


def _rejects(component, value, *needles, dynamic=False) -> str:
    with pytest.raises(InputError) as info:
        check_value(component, value, dynamic)
    text = str(info.value)
    for needle in (control_name(component), *needles):
        assert needle in text
    return text


def test_a_slider_names_itself_and_its_range():
    slider = gr.Slider(0, 1, value=0.5, label="Quantile p")
    for bad in ("abc", None, math.nan, math.inf, 1.5, -0.1, [0.5], True):
        _rejects(slider, bad, "from 0 to 1")
    assert "got nothing" in _rejects(slider, None)
    assert check_value(slider, 0.25) == 0.25 and check_value(slider, 1) == 1


def test_a_whole_number_takes_no_fraction_text_or_null():
    seed = gr.Number(0, precision=0, label="Seed")
    for bad in ("7", None, 2.5, math.nan, False):
        _rejects(seed, bad, "whole number")
    assert check_value(seed, 7.0) == 7 and isinstance(check_value(seed, 7.0), int)


def test_a_choice_must_be_one_of_the_choices():
    method = gr.Dropdown([("STA", "sta"), ("TA", "task_arithmetic")], value="sta", label="Method")
    _rejects(method, "nope", "sta, task_arithmetic")
    _rejects(method, None, "sta, task_arithmetic")
    assert check_value(method, "task_arithmetic") == "task_arithmetic"
    target = gr.Dropdown(TASKS, value="task0", label="Task to forget")
    assert check_value(target, "another_source_task", dynamic=True) == "another_source_task"
    _rejects(target, 12, "needs text", dynamic=True)
    _rejects(target, "x" * (TEXT_LIMIT + 1), f"at most {TEXT_LIMIT}", dynamic=True)


def test_a_checkbox_group_takes_a_list_of_names():
    tasks = gr.CheckboxGroup(TASKS, value=TASKS, label="Tasks")
    _rejects(tasks, "task0", "list of names")
    _rejects(tasks, [1, 2], "needs text")
    _rejects(tasks, ["task9"], "task0, task1, task2")
    assert check_value(tasks, ["task9"], dynamic=True) == ["task9"]
    assert check_value(tasks, None) == []


def test_text_and_uploads():
    path = gr.Textbox("", label="Manifest path")
    _rejects(path, 5, "needs text")
    _rejects(path, "p" * (TEXT_LIMIT + 1), f"at most {TEXT_LIMIT}")
    assert check_value(path, None) == ""
    upload = gr.UploadButton("Load run config (JSON)")
    assert check_value(upload, {"path": "/tmp/x.json", "orig_name": "x.json"}) == "/tmp/x.json"
    assert check_value(upload, None) is None
    _rejects(upload, {"orig_name": "x.json"}, "uploaded file")
    files = gr.File(label="Downloads", file_count="multiple")
    assert check_value(files, [{"path": "/tmp/a.csv"}, {"path": "/tmp/b.html"}]) == [
        "/tmp/a.csv",
        "/tmp/b.html",
    ]
    _rejects(files, {"path": "/tmp/a.csv"}, "uploaded file")
    _rejects(upload, [{"path": "/tmp/a.csv"}], "uploaded file")


def test_a_long_rejected_value_is_cut():
    text = _rejects(gr.Slider(0, 1, label="p"), "a" * 100_000, "from 0 to 1")
    assert len(text) < 200


def _line(page, elem_id: str):
    return next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def _event(page, api_name: str):
    return next(fn for fn in page.fns.values() if fn.api_name == api_name)


def test_every_event_checks_raw_values_and_shows_progress_on_one_line(page):
    lines = {"source-status"} | {
        f"{tab}-run-status" for tab in ("merge", "masks", "forget", "xi", "analyses")
    }
    for block_fn in page.fns.values():
        if block_fn.fn is None:
            continue
        assert block_fn.preprocess is False
        assert len(block_fn.show_progress_on) == 1
        assert block_fn.show_progress_on[0].elem_id in lines
        if block_fn.trigger_after is not None:
            assert block_fn.trigger_only_on_success  # one mistake, one sentence
    assert _event(page, "merge").show_progress_on == [_line(page, "merge-run-status")]
    assert _event(page, "forget").show_progress_on == [_line(page, "forget-run-status")]
    assert _event(page, "load").show_progress_on == [_line(page, "source-status")]
    uploads = [fn for fn in page.fns.values() if fn.targets and fn.targets[0][1] == "upload"]
    assert {fn.show_progress_on[0].elem_id for fn in uploads} == {
        "merge-run-status",
        "forget-run-status",
    }


def _wrong_values(component) -> st.SearchStrategy:
    """Values the component's control can never send (through the API they still arrive)."""
    junk = st.one_of(
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.lists(st.integers(), min_size=1, max_size=3),
    )
    if isinstance(component, gr.Slider):
        low, high = component.minimum, component.maximum
        outside = st.one_of(
            st.floats(max_value=low, exclude_max=True), st.floats(min_value=high, exclude_min=True)
        )
        return st.one_of(st.text(), st.none(), st.booleans(), outside, junk)
    if isinstance(component, gr.Number):
        fraction = st.floats(allow_infinity=False, allow_nan=False).filter(
            lambda v: v != int(v) if component.precision == 0 else False
        )
        bad = st.one_of(st.text(), st.none(), st.booleans(), st.just(math.nan), junk)
        return st.one_of(bad, fraction) if component.precision == 0 else bad
    if isinstance(component, gr.CheckboxGroup):
        return st.one_of(st.text(), st.integers(), st.lists(st.integers(), min_size=1))
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        return st.one_of(st.integers(), st.floats(), junk)
    if isinstance(component, gr.Textbox):
        return st.one_of(st.integers(), st.booleans(), junk)
    return st.nothing()


def _valid(component):
    """A value the control accepts: its start value (a slider's, moved into its range)."""
    value = copy.deepcopy(component.value)
    if isinstance(component, gr.Slider):
        return min(max(value, component.minimum), component.maximum)
    return value


def _checked_inputs(page) -> list[tuple]:
    """(event, index of an input, its component) for every input a user controls."""
    found = []
    for block_fn in page.fns.values():
        if block_fn.fn is None:
            continue
        for index, component in enumerate(block_fn.inputs):
            if not isinstance(component, (gr.State, gr.UploadButton, gr.Button)):
                found.append((block_fn, index, component))
    return found


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_wrong_values_get_one_sentence_and_write_nothing(page, data, tmp_path_factory):
    block_fn, index, component = data.draw(st.sampled_from(_checked_inputs(page)))
    wrong = data.draw(_wrong_values(component))
    values = [_valid(c) for c in block_fn.inputs]
    values[index] = wrong
    folder = tmp_path_factory.mktemp("downloads")
    before, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        with pytest.raises(gr.Error) as info:
            block_fn.fn(*values)
    finally:
        tempfile.tempdir = before
    message = info.value.message
    assert "\n" not in message and 0 < len(message) <= MESSAGE_LIMIT
    assert control_name(component) in message
    assert "Traceback" not in message and "bug" not in message
    assert list(folder.iterdir()) == []  # nothing written


def test_every_control_starts_at_a_value_it_accepts(page):
    """A slider whose start value lies outside its range would refuse every Run."""
    for block_fn in page.fns.values():
        for component in block_fn.inputs:
            if isinstance(component, (gr.Slider, gr.Number)) and component.value is not None:
                check_value(component, component.value)


def test_a_picker_whose_choices_an_event_changes_takes_any_name(page):
    """The run picker of the Merge tab lists this user's runs: '3' is no start choice."""
    pickers = [
        c
        for fn in page.fns.values()
        for c in fn.inputs
        if isinstance(c, gr.Dropdown) and c.label == "Downloads of run"
    ]
    assert pickers
    event = next(fn for fn in page.fns.values() if pickers[0] in fn.inputs)
    assert event.fn("3", {"3": ["/tmp/run3/run_config.json"]}) == ["/tmp/run3/run_config.json"]
