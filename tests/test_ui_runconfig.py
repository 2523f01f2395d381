"""Run configs: every setting round-trips JSON, bad values are one-line InputErrors."""

from __future__ import annotations

import json
import re

import pytest

from taskarith_core.errors import InputError
from taskarith_core.runconfig import RunConfig, load_config


def test_round_trip_keeps_every_setting(tmp_path):
    cfg = RunConfig(
        tasks=["a", "b"], method="ties", params={"keep": 0.3, "lam": 0.7}, max_samples=50, seed=3
    )
    path = tmp_path / "run.json"
    path.write_text(cfg.to_json())
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert again.params == {"keep": 0.3, "lam": 0.7, "dare_rate": 0.0, "dare_seed": 0}
    assert set(json.loads(cfg.to_json())) == set(RunConfig().to_dict())


def test_key_ignores_settings_the_method_does_not_read():
    ta = RunConfig(method="task_arithmetic", params={"lam": 0.3})
    assert ta.key() == RunConfig(method="task_arithmetic", params={"lam": 0.3}, seed=5).key()
    assert (
        ta.key() == RunConfig(method="task_arithmetic", params={"lam": 0.3, "dare_rate": 0}).key()
    )
    assert ta.key() != RunConfig(method="task_arithmetic", params={"lam": 0.4}).key()
    sta = RunConfig(method="sta", params={"p": 0.5})
    assert sta.key() != RunConfig(method="sta", params={"p": 0.5}, seed=5).key()
    assert sta.key() != RunConfig(method="sta", params={"p": 0.6}).key()


@pytest.mark.parametrize(
    ("old", "method", "params"),
    [
        ({"method": "ties", "k": 0.3, "lam": 0.7}, "ties", {"keep": 0.3, "lam": 0.7}),
        ({"method": "ties"}, "ties", {"keep": 0.2, "lam": 0.3}),  # version 1's defaults
        (
            {"method": "consensus", "agreement": 3, "tall_lambda": 0.5},
            "consensus",
            {"agreement": 3, "tall_lambda": 0.5, "lam": 0.3},
        ),
        (
            {"method": "dare", "drop_rate": 0.5, "seed": 4},
            "dare",
            {"dare_rate": 0.5, "lam": 0.3, "dare_seed": 4},
        ),
        (
            {"method": "talos_mask", "k": 0.8, "lam": 1.0},
            "masked_arithmetic",
            {"sparsity": 0.8, "lam": 1.0},
        ),
        (
            {"version": 1, "action": "negate", "target": "a", "method": "sta", "p": 0.95},
            "sta",
            {"p": 0.95},
        ),
    ],
)
def test_version_1_configs_are_read_with_todays_names(old, method, params):
    cfg = RunConfig.from_dict(old)
    assert (cfg.method, cfg.version) == (method, 2)
    assert {k: cfg.params[k] for k in params} == params


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"p": 1.5}, "p is outside [0, 1]"),
        ({"method": "bogus"}, "method is not one of sta, task_arithmetic"),
        ({"colour": "red"}, "setting number 1 is not a run-config setting"),
        ({"samples": 0}, "at least 1"),
        ({"samples": 1e9}, "more than the limit 10000"),
        ({"method": "task_arithmetic", "lam": 1e308}, "lam is outside [-100, 100]"),
        (
            {"method": "ties", "params": {"lam": 1e308}, "version": 2},
            "lam is outside [-100, 100]",
        ),
        ({"version": 99}, "version must be 2"),
        ({"seed": -1}, "seed is less than 0"),
        ({"paradigm": "half"}, "paradigm is not one of full"),
        ({"samples": 2.5}, "whole number"),
        ({"lam": "x"}, "must be a number"),
        ({"tasks": "a,b"}, "list of task names"),
        ({"action": "negate"}, "target task"),
        ({"source": "manifest"}, "no manifest path"),
        ({"method": "talos_mask", "k": 1.0}, "sparsity is outside [0, 1)"),
        ({"method": "ties", "params": {"k": 0.2}}, "parameter number 1 is not a parameter"),
        ({"method": "ties", "params": {"keep": 0}}, "keep is outside (0, 1]"),
    ],
)
def test_bad_settings_name_the_setting(data, words):
    with pytest.raises(InputError, match=re.escape(words)):
        RunConfig.from_dict(data)


def test_values_read_from_a_config_are_never_repeated():
    secret = "s3cr3t-" * 3
    for data in (
        {secret: 1},
        {"method": secret},
        {"lam": secret},
        {"tasks": [secret, 1]},
        {"params": {secret: 1}},
        {"params": {"p": secret}},
        {"method": "consensus", "params": {"tall_lambda": [0.1, secret]}},
    ):
        with pytest.raises(InputError) as info:
            RunConfig.from_dict(data)
        assert "s3cr3t" not in str(info.value)


def test_binary_huge_and_deep_files_are_one_sentence(tmp_path):
    cases = {
        "png.json": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "deep.json": b"[" * 100_000,
        "digits.json": b'{"seed": ' + b"9" * 5000 + b"}",
        "big.json": b'{"method": "' + b"a" * (2 << 20) + b'"}',
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError) as info:
            load_config(path)
        message = str(info.value)
        assert "\n" not in message and len(message) < 400, name


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid JSON"):
        RunConfig.from_json("{nope")
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "absent.json")
    with pytest.raises(InputError, match="JSON object"):
        RunConfig.from_json("[1, 2]")


def test_run_configs_know_every_zoo_paradigm():
    from taskarith_core import runconfig
    from taskarith_core.zoo import PARADIGMS

    assert runconfig.PARADIGMS == PARADIGMS
