"""Property-based checks: random wrong values fed to the CLI's parsers, the run-config loader and
the manifest loader always get one sentence (exit code 2 / InputError), no traceback, and
nothing written."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskarith_core.cli import main
from taskarith_core.errors import MESSAGE_LIMIT, InputError
from taskarith_core.limits import COEFFICIENT, SAMPLES, SEED, XI_POINTS
from taskarith_core.real.manifest import load_manifest
from taskarith_core.runconfig import RunConfig, load_config

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: text that is no number at all (names, symbols, empty, very long, line breaks, unicode)
not_a_number = st.text(max_size=300).filter(lambda t: not _is_number(t) and not t.startswith("-"))
#: text that is no valid name: our names never contain a space
not_a_name = not_a_number.map(lambda t: f"no such {t}")
not_finite = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999", "-1e999"])


def _whole(low: int, high: int) -> st.SearchStrategy[str]:
    """Wrong values for a whole number in [low, high]."""
    return st.one_of(
        not_a_number,
        not_finite,
        st.integers(min_value=high + 1, max_value=high * 10**6 + 10).map(str),
        st.integers(max_value=low - 1, min_value=low - 10**9).map(lambda v: f"={v}"),
        st.floats(min_value=0.01, max_value=0.99).map(lambda v: f"{low + v:.2f}"),
    )


def _real(low: float, high: float) -> st.SearchStrategy[str]:
    """Wrong values for a finite number in [low, high]."""
    above = st.floats(min_value=high * 1.001 + 1e-3, max_value=1e300).map(repr)
    below = st.floats(min_value=-1e300, max_value=low - 1e-3 - abs(low) * 0.001).map(repr)
    return st.one_of(not_a_number, not_finite, above, below.map(lambda v: f"={v}"))


def _join(flag: str, value: str) -> list[str]:
    """``--flag VALUE`` (``--flag=VALUE`` when the value starts with '=' or '-')."""
    if value.startswith("="):
        return [flag + value]
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


#: (command prefix, flag, wrong values); the prefix holds the required flags
CLI_CASES = [
    (["analyse", "xi"], "--points", _whole(1, XI_POINTS)),
    (["analyse", "xi"], "--samples", _whole(1, SAMPLES)),
    (["analyse", "xi"], "--threshold", st.one_of(not_a_number, not_finite)),
    (["analyse", "xi"], "--workers", _whole(1, 256)),
    (["analyse", "xi"], "--k", _real(0.0, 0.999)),
    (["analyse", "xi"], "--paradigm", not_a_name),
    (["analyse", "iou"], "--p", _real(0.0, 1.0)),
    (["analyse", "iou"], "--seed", _whole(0, SEED)),
    (["analyse", "localisation"], "--coefficient", _real(-COEFFICIENT, COEFFICIENT)),
    (["analyse", "localisation"], "--max-samples", _whole(1, 10**6)),
    (["analyse", "sweep", "--method", "ta"], "--values", _real(-COEFFICIENT, COEFFICIENT)),
    (["analyse", "sweep"], "--method", not_a_name),
    (["analyse", "scaling"], "--methods", not_a_name),
    (["analyse", "scaling", "--methods", "ta=0.3"], "--counts", _whole(2, 100)),
    (["analyse", "scaling", "--methods", "ta=0.3"], "--subsets", _whole(1, 100)),
    (["analyse", "stability"], "--ns-values", _whole(1, SAMPLES)),
    (["reproduce", "--protocol", "addition"], "--samples", _whole(1, SAMPLES)),
    (["reproduce", "--protocol", "addition"], "--max-samples", _whole(1, 10**6)),
    (["reproduce", "--protocol", "addition"], "--threads", _whole(1, 256)),
    (["reproduce"], "--protocol", not_a_name),
    (["importance", "--metric", "lp", "--task", "digits"], "--samples", _whole(1, SAMPLES)),
    (["evaluate", "--model", "M.safetensors"], "--max-samples", _whole(1, 10**6)),
]


def _assert_one_sentence(code: int, err: str) -> None:
    assert code == 2
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1
    assert len(err) <= MESSAGE_LIMIT + 20 and "Traceback" not in err


@pytest.mark.parametrize(("prefix", "flag", "values"), CLI_CASES, ids=lambda v: str(v)[:30])
def test_cli_refuses_wrong_values_in_one_sentence(prefix, flag, values, capsys, monkeypatch):
    ran = []
    for module in ("analyse_cmds", "real_cmds", "model_cmds"):
        # a value the parser let through would start the command: note it instead
        monkeypatch.setattr(f"taskarith_core.cli.{module}.tqdm_progress", lambda *a: ran.append(a))

    @SETTINGS
    @given(value=values)
    def check(value: str) -> None:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "out"
            target = out if prefix[0] == "analyse" else out / "result.csv"
            code = main([*prefix, *_join(flag, value), "--out", str(target)])
            _assert_one_sentence(code, capsys.readouterr().err)
            assert list(Path(folder).iterdir()) == []
        assert ran == []

    check()


#: wrong values for run-config settings, by the setting's kind
_WRONG_FOR_NUMBER = st.one_of(
    st.text(max_size=200), st.none(), st.lists(st.integers(), max_size=3), st.booleans(),
    st.just(math.nan), st.just(math.inf), st.floats(min_value=1e10, max_value=1e308),
    st.floats(max_value=-1e6, min_value=-1e308),
)  # fmt: skip
_WRONG_FOR_TEXT = st.one_of(
    st.integers(), st.floats(), st.lists(st.text(max_size=5), max_size=3), st.booleans(),
    st.text(max_size=50).map(lambda t: f"no such {t}"),
)  # fmt: skip
_CONFIG_CASES = {
    "samples": _WRONG_FOR_NUMBER,
    "seed": _WRONG_FOR_NUMBER,
    "version": st.integers(min_value=3, max_value=10**12),
    "source": _WRONG_FOR_TEXT,
    "action": _WRONG_FOR_TEXT,
    "method": _WRONG_FOR_TEXT,
    "split": _WRONG_FOR_TEXT,
    "tasks": st.one_of(st.text(max_size=20), st.lists(st.integers(), min_size=1, max_size=3)),
    "max_samples": _WRONG_FOR_NUMBER.filter(lambda v: v is not None),
}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(_CONFIG_CASES)))
def test_run_config_refuses_wrong_settings_in_one_sentence(data, name):
    value = data.draw(_CONFIG_CASES[name])
    with pytest.raises(InputError) as info:
        RunConfig.from_dict({name: value})
    message = str(info.value)
    assert "\n" not in message and 0 < len(message) <= MESSAGE_LIMIT


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)  # fmt: skip


@SETTINGS
@given(content=st.one_of(st.binary(max_size=2000), _json.map(lambda v: json.dumps(v).encode())))
def test_run_config_files_are_one_sentence_or_a_config(content, tmp_path):
    path = tmp_path / "run.json"
    path.write_bytes(content)
    try:
        load_config(path)
    except InputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= MESSAGE_LIMIT


@SETTINGS
@given(content=st.one_of(st.binary(max_size=2000), _json.map(lambda v: yaml.safe_dump(v).encode())))
def test_manifest_files_are_one_sentence(content, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_manifest(path)
    assert "\n" not in str(info.value) and len(str(info.value)) <= MESSAGE_LIMIT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]
