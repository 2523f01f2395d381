"""The served page's API with wrong values, as a script or a broken client would send them: every
answer is a sentence that names the control, and no answer repeats a file the user pointed at."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from conftest import CANARY
from gradio_client import Client
from gradio_client.exceptions import AppError

from taskarith_core.ui.guard import control_name
from tests.served_page import serve_tiny_page


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, page) of the page served as ``python app.py`` serves it."""
    with serve_tiny_page(tmp_path_factory, "tiny_api", concurrency=2) as (url, demo, _settings):
        yield Client(url, verbose=False), demo


def _wrong(component) -> list:
    """Values of the wrong type for this control (a slider gets text and null, ...)."""
    if isinstance(component, (gr.Slider, gr.Number)):
        return ["abc", None]
    if isinstance(component, gr.CheckboxGroup):
        return ["task0", [1, 2]]
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        return [12345, ["a"]]
    if isinstance(component, gr.Textbox):
        return [12345]
    return []


def _valid(component):
    """A value the control accepts: its start value (a slider's, moved into its range)."""
    if isinstance(component, gr.Slider):
        return min(max(component.value, component.minimum), component.maximum)
    return component.value


def _endpoints(demo) -> dict[str, list]:
    """api name -> the controls it takes (its State inputs are not part of the API)."""
    return {
        f"/{fn.api_name}": [c for c in fn.inputs if not isinstance(c, gr.State)]
        for fn in demo.fns.values()
        if fn.api_name and fn.api_visibility == "public"
    }


def test_every_input_of_every_event_answers_a_wrong_type_with_a_sentence(served):
    client, demo = served
    endpoints = _endpoints(demo)
    assert {"/merge", "/forget", "/masks", "/load", "/xi", "/analysis"} <= set(endpoints)
    tried = 0
    for name, controls in endpoints.items():
        good = [_valid(c) for c in controls]
        for index, control in enumerate(controls):
            for wrong in _wrong(control):
                values = list(good)
                values[index] = wrong
                with pytest.raises(AppError) as info:
                    client.predict(*values, api_name=name)
                message = str(info.value)
                assert control_name(control) in message, (name, control_name(control), message)
                assert "\n" not in message and "Traceback" not in message
                tried += 1
    assert tried > 100


def test_an_event_without_inputs_answers_with_a_sentence(served):
    client, _ = served
    with pytest.raises(AppError, match="no merge has run yet"):
        client.predict(api_name="/merged_model")


def _upload_events(demo) -> list:
    return [fn for fn in demo.fns.values() if fn.targets and fn.targets[0][1] == "upload"]


def test_no_page_message_repeats_a_file_the_user_pointed_at(served, canary_files, tmp_path):
    """Each private file as the manifest path typed on the page, as an uploaded run config, and
    as the manifest an uploaded run config names: every answer is a sentence without its text."""
    client, demo = served
    upload = _upload_events(demo)[0].fn
    messages = []
    for name, path in canary_files.items():
        with pytest.raises(AppError) as info:
            client.predict("manifest", "full", str(path), api_name="/load")
        messages.append(str(info.value))
        config = tmp_path / f"{name}.run_config.json"
        config.write_text(json.dumps({"source": "manifest", "manifest": str(path)}))
        for uploaded in (path, config):
            with pytest.raises(gr.Error) as raised:
                upload({"path": str(uploaded), "orig_name": uploaded.name}, None)
            messages.append(raised.value.message)
    assert len(messages) == 3 * len(canary_files)
    for message in messages:
        assert CANARY not in message
        assert message and "\n" not in message and "bug" not in message, message
