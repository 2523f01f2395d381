"""Run configs: every setting round-trips JSON, bad values are one-line InputErrors."""

from __future__ import annotations

import json
import re

import pytest

from taskarith_core.errors import InputError
from taskarith_core.runconfig import RunConfig, load_config


def test_round_trip_keeps_every_setting(tmp_path):
    cfg = RunConfig(tasks=["a", "b"], method="ties", k=0.3, lam=0.7, max_samples=50, seed=3)
    path = tmp_path / "run.json"
    path.write_text(cfg.to_json())
    again = load_config(path)
    assert again == cfg
    assert set(json.loads(cfg.to_json())) == set(RunConfig().to_dict())


def test_key_ignores_settings_the_method_does_not_read():
    ta = RunConfig(method="task_arithmetic", lam=0.3)
    assert ta.key() == RunConfig(method="task_arithmetic", lam=0.3, p=0.1, k=0.9).key()
    assert ta.key() != RunConfig(method="task_arithmetic", lam=0.4).key()
    sta = RunConfig(method="sta", p=0.5)
    assert sta.key() == RunConfig(method="sta", p=0.5, lam=1.5).key()
    assert sta.key() != RunConfig(method="sta", p=0.6).key()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"p": 1.5}, "p=1.5 is outside [0, 1]"),
        ({"method": "bogus"}, "method='bogus'"),
        ({"colour": "red"}, "unknown setting 'colour'"),
        ({"samples": 0}, "at least 1"),
        ({"samples": 2.5}, "whole number"),
        ({"lam": "x"}, "must be a number"),
        ({"tasks": "a,b"}, "list of task names"),
        ({"action": "negate"}, "target task"),
        ({"source": "manifest"}, "no manifest path"),
        ({"method": "talos_mask", "k": 1.0}, "outside [0, 1)"),
    ],
)
def test_bad_settings_name_the_setting(data, words):
    with pytest.raises(InputError, match=re.escape(words)):
        RunConfig.from_dict(data)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid JSON"):
        RunConfig.from_json("{nope")
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "absent.json")
    with pytest.raises(InputError, match="JSON object"):
        RunConfig.from_json("[1, 2]")
