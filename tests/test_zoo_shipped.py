"""The shipped zoo against the code that builds it and the card that describes it.

A rebuilt recipe (``ZOO_SPEC``) with stale assets, or a card whose numbers the engine no longer
reproduces, fails here rather than on a researcher's screen.
"""

from __future__ import annotations

import json

import pytest

from taskarith_core.zoo import ZOO_ROOT, ZOO_SPEC, load_zoo

CARD = json.loads((ZOO_ROOT / "card.json").read_text())


def test_shipped_task_file_is_what_the_recipe_writes():
    from taskarith_core.zoo.arch import build_vocabulary
    from taskarith_core.zoo.build import _all_texts, _spec_json

    expected = _spec_json(ZOO_SPEC, build_vocabulary(_all_texts(ZOO_SPEC.data)))
    shipped = json.loads((ZOO_ROOT / "tasks.json").read_text())
    assert shipped == json.loads(json.dumps(expected))


def test_card_meets_the_acceptance_checks_except_per_target_negation():
    """Every check passes except negation counted per target: on the mean the control keeps
    95.7% of its zero-shot accuracy, but on test 2 of 8 task-arithmetic targets and 4 of 8
    STA-lp targets leave it below 95% (the value is chosen on val). The card says so."""
    failed = {name: check for name, check in CARD["checks"].items() if not check["ok"]}
    assert set(failed) == {"negation_target_le_60pct_every_target_keeps_control"}
    negation = failed["negation_target_le_60pct_every_target_keeps_control"]
    assert negation["ta"]["targets_keeping_control"] == "6 of 8"
    assert negation["sta-lp"]["targets_keeping_control"] == "4 of 8"
    summary = CARD["paradigms"]["full"]["negation"]["ta"]
    assert summary["targets_losing_control"] == ["printed_digits", "shapes"]


def test_card_negation_summary_follows_its_table():
    """The per-target counts are the card's own negation rows, counted (nothing typed)."""
    import pandas as pd

    from taskarith_core.zoo.claims import negation_summary

    for paradigm in CARD["paradigms"].values():
        table = pd.DataFrame(paradigm["negation_table"])
        assert negation_summary(table) == paradigm["negation"]


@pytest.mark.parametrize("method", ["ta", "sta-lp"])
def test_a_card_negation_row_is_reproduced(method):
    """Re-measure one target task's negation at the value the card chose on val (test split)."""
    from taskarith_core.analyses.negation import negation_sweep

    rows = [r for r in CARD["paradigms"]["full"]["negation_table"] if r["method"] == method]
    row = next(r for r in rows if r["task"] == "colours")
    source = load_zoo("full")
    frame = negation_sweep(source, method, [row["value"]], tasks=["colours"], samples=32, seed=0)
    got = frame.iloc[0]
    control_n = source.data_spec.split_size(source.control_task, "test")
    # the same images and weights; only float summation order may differ between CPUs
    assert abs(got["target_accuracy"] - row["target_accuracy"]) <= 2 / 1000
    assert abs(got["control_accuracy"] - row["control_accuracy"]) <= 2 / control_n
    assert got["control_zeroshot"] == pytest.approx(row["control_zeroshot"], abs=2 / control_n)
