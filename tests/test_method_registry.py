"""Every registered method reaches every place that lists methods: nothing restates the set."""

import re
import subprocess
import sys

import pytest

from taskarith_core.analyses.sweeps import METHODS
from taskarith_core.fusion import MERGE_METHODS, NEGATION_METHODS
from taskarith_core.real.streamed import _LINEAR
from taskarith_core.runconfig import MERGE_CHOICES, NEGATE_CHOICES, PAGE_SIDE_INPUTS, RunConfig
from taskarith_core.ui.analyses_tab import SWEEP_METHODS
from taskarith_core.ui.merge_tab import METHOD_LABELS, PARAM_CONTROLS, merge_config, param_values


def _help(*argv: str) -> str:
    """The command's --help as one line (argparse wraps lines, also at hyphens)."""
    text = subprocess.run(
        [sys.executable, "-m", "taskarith_core", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return re.sub(r"\s+", " ", text).replace("- ", "-")


@pytest.fixture(scope="module")
def helps():
    return {
        "merge": _help("merge"),
        "negate": _help("negate"),
        "reproduce": _help("reproduce"),
    }


@pytest.mark.parametrize("name", list(MERGE_METHODS))
def test_every_merge_method_appears_everywhere(name, helps):
    spec = MERGE_METHODS[name]
    assert name in helps["merge"]
    for param in spec.params:
        assert param.flag in helps["merge"], param.flag
    assert (name in _LINEAR) == spec.linear_in_lambda
    swept = [table for table, sweep in METHODS.items() if sweep.registry == name]
    if spec.needs != "adaptation":  # sweeps cannot yet give a method images and a model forward
        assert swept
    assert all(table in SWEEP_METHODS for table in swept)
    assert all(table in helps["reproduce"] for table in swept)
    if spec.needs in PAGE_SIDE_INPUTS:
        assert name in MERGE_CHOICES and name in [value for _, value in METHOD_LABELS]
        controls = [p.name for m, p in PARAM_CONTROLS if m == name]
        assert set(controls) >= {p.name for p in spec.params}
        cfg = merge_config(None, ["a", "b"], name, "lp", 8, 0, 0, "test", *param_values(name))
        assert cfg.method_params() == spec.defaults
        assert RunConfig.from_json(cfg.to_json()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("name", list(NEGATION_METHODS))
def test_every_negation_method_appears_everywhere(name, helps):
    assert name in helps["negate"]
    for param in NEGATION_METHODS[name].params:
        assert param.flag in helps["negate"]
    assert name in NEGATE_CHOICES


def test_old_sweep_names_are_still_read():
    from taskarith_core.analyses.sweeps import method_spec

    assert method_spec("fisher-mask") is METHODS["bottomk-fisher"]


def test_the_method_table_imports_none_of_the_drivers():
    """sweeps, negation and the streamed drivers build on the method table, never the reverse,
    so none of them imports another through it."""
    import ast
    from pathlib import Path

    import taskarith_core.analyses.methods as table

    tree = ast.parse(Path(table.__file__).read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.endswith(("sweeps", "negation", "streamed", "protocol"))}
