"""Protocols: hyperparameters chosen on val, numbers reported on test."""

from __future__ import annotations

import pytest

from taskarith_core.analyses.negation import negation_sweep
from taskarith_core.analyses.protocol import addition_protocol, method_grid, negation_protocol
from taskarith_core.analyses.sweeps import accuracy_sweep
from taskarith_core.errors import InputError
from tests.tiny_source import make_tiny_source


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_protocol"), n_tasks=2)


@pytest.fixture(scope="module")
def tiny_talos(tmp_path_factory):
    return make_tiny_source(tmp_path_factory.mktemp("tiny_protocol_t"), n_tasks=2, paradigm="talos")


def test_addition_chooses_on_val_and_reports_test(tiny):
    grid = [0.1, 0.5, 1.0]
    table = addition_protocol(tiny, ["ta"], grids={"ta": grid})
    val = accuracy_sweep(tiny, "ta", grid, split="val")
    means = val[val["task"] == "mean"].set_index("value")["normalised"]
    ta = table[table["method"] == "ta"]
    chosen = ta["value"].iloc[0]
    assert means[chosen] == means.max()
    test = accuracy_sweep(tiny, "ta", [chosen], split="test")
    expected = test.set_index("task")["accuracy"]
    got = ta.set_index("task")["accuracy"]
    assert got.to_dict() == pytest.approx(expected.to_dict())
    assert set(table["split"]) == {"test"} and set(table["selected_on"]) == {"val"}
    refs = table[table["method"].isin(["zeroshot", "finetuned"])]
    assert refs.query("method == 'finetuned' and task != 'mean'")["normalised"].eq(1.0).all()


def test_negation_choice_obeys_the_control_rule_on_val(tiny):
    grid = [0.05, 0.2, 0.5, 1.0]
    table = negation_protocol(tiny, ["ta"], grids={"ta": grid})
    val = negation_sweep(tiny, "ta", grid, split="val")
    for row in table[table["task"] != "mean"].itertuples():
        options = val[val["task"] == row.task]
        ok = options[options["keeps_control"]]
        if row.control_rule_on_val:
            assert row.value == ok.sort_values(["target_accuracy", "value"])["value"].iloc[0]
        else:
            assert ok.empty
    assert "mean" in set(table["task"]) and set(table["split"]) == {"test"}


def test_grids_default_to_the_papers_and_extend_for_talos(tiny, tiny_talos):
    from taskarith_core.analyses.protocol import _talos_sparsity
    from taskarith_core.analyses.sweeps import LAMBDA_GRID

    assert method_grid(tiny, "ta", tiny.tasks, None)[-1] == 1.0
    from taskarith_core.sta_levels import distinct_p

    # STA's p: one value per distinct mask (N - 1 of them), not a fixed grid that repeats masks
    assert method_grid(tiny, "sta-lp", tiny.tasks, None) == list(distinct_p(2)) == [0.0]
    extended = method_grid(tiny_talos, "talos-mask", tiny_talos.tasks, None)
    k = _talos_sparsity(tiny_talos, tiny_talos.tasks)
    assert extended[-1] == pytest.approx(1.0 / (1.0 - k), abs=1e-3) and extended[-1] > 5.0
    assert set(LAMBDA_GRID) <= set(extended)  # extended, not shifted: the small values stay
    assert extended == sorted(set(extended))
    with pytest.raises(InputError, match="empty"):
        method_grid(tiny, "ta", tiny.tasks, {"ta": []})
    with pytest.raises(InputError, match="unknown method"):
        addition_protocol(tiny, ["bogus"])


def test_sta_forgetting_searches_p_finer_near_one(tiny):
    """STA forgetting has no lambda, so p alone is searched; in steps of 0.05 up to 0.99 (the
    addition grid stops at 0.9, where the control rule's boundary often lies)."""
    from taskarith_core.analyses.sweeps import NEGATION_P_GRID, P_GRID

    forget = method_grid(tiny, "sta-lp", tiny.tasks, None, negation=True)
    assert forget == list(NEGATION_P_GRID)
    assert {0.85, 0.95, 0.99} <= set(forget) and set(P_GRID) <= set(forget)
    assert forget == sorted(forget)
    assert method_grid(tiny, "ta", tiny.tasks, None, negation=True) == method_grid(
        tiny, "ta", tiny.tasks, None
    )
    sweep = negation_sweep(tiny, "sta-lp", tasks=tiny.tasks[:1], samples=2)
    assert sweep["value"].tolist() == list(NEGATION_P_GRID)
