"""The quoting rule: user input quoted short, file contents and loader texts never."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest
import yaml

from taskarith_core.errors import MESSAGE_LIMIT, InputError, describe, file_key, quote

PACKAGE = Path(__file__).resolve().parents[1] / "taskarith_core"


def test_quote_cuts_long_input_and_messages_are_capped():
    assert quote("abc") == "'abc'"
    assert len(quote("a" * 10_000)) <= 82
    assert len(str(InputError("x" * 10**6))) == MESSAGE_LIMIT


def test_describe_keeps_kind_and_position_never_text():
    secret = "hunter2"
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load(f"{secret}: [unclosed\n{secret}\n")
    assert describe(info.value) == "ParserError at line 3, column 1"  # the end of the text
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(f'{{"{secret}"')
    assert describe(info.value).startswith("JSONDecodeError at line 1, column")
    with pytest.raises(UnicodeDecodeError) as info:
        (b"ok" + b"\xff" + secret.encode()).decode("utf-8")
    assert describe(info.value) == "UnicodeDecodeError at byte 2"
    text = describe(pickle.UnpicklingError(f"weights_only=False {secret}"))
    assert text == "UnpicklingError"


def _formats(node: ast.AST, name: str) -> bool:
    """``{name}`` or ``{str(name)}`` inside an f-string."""
    if not isinstance(node, ast.FormattedValue):
        return False
    value = node.value
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "str" and value.args:
        value = value.args[0]
    return isinstance(value, ast.Name) and value.id == name


def test_no_message_formats_a_caught_exception():
    """A caught exception's text is only ever passed through describe() (it may quote a file);
    an InputError's own text is ours and may be shown."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "ui":
            continue  # the page reports unexpected failures on its own terms
        for handler in ast.walk(ast.parse(path.read_text())):
            if not isinstance(handler, ast.ExceptHandler) or not handler.name:
                continue
            if isinstance(handler.type, ast.Name) and handler.type.id == "InputError":
                continue
            for node in ast.walk(handler):
                if _formats(node, handler.name):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_a_checkpoints_odd_key_is_named_by_position_only():
    """Tensor names are shown when they look like tensor names; any other text in a key (a file
    that merely parses as a checkpoint) is replaced by its position."""
    import torch

    from taskarith_core.taskvec import check_same_layout

    assert file_key("visual.conv1.weight", 0) == "'visual.conv1.weight'"
    assert file_key("secret line: do not print", 4) == "number 5"
    reference = {"a.weight": torch.zeros(2)}
    with pytest.raises(InputError) as caught:
        check_same_layout(
            reference, {"a.weight": torch.zeros(2), "password = hunter2": torch.zeros(1)}
        )
    assert "hunter2" not in str(caught.value) and "number 2" in str(caught.value)
