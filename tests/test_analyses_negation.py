"""The control >= 95% of zero-shot rule and the negated state of each method."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from taskarith_core.analyses.negation import mark_best, negated_state
from taskarith_core.errors import InputError


def _frame():
    rows = [
        # method, task, value, target, control (zero-shot control 0.80 -> needs >= 0.76)
        ("ta", "a", 0.2, 0.50, 0.80),
        ("ta", "a", 0.4, 0.30, 0.77),
        ("ta", "a", 0.6, 0.30, 0.76),  # ties with 0.4 on target: the smaller edit wins
        ("ta", "a", 0.8, 0.10, 0.60),  # lowest target but breaks the control rule
        ("ta", "b", 0.2, 0.40, 0.70),  # no value keeps the control for b
    ]
    frame = pd.DataFrame(
        rows, columns=["method", "task", "value", "target_accuracy", "control_accuracy"]
    )
    return frame.assign(control_zeroshot=0.80)


def test_mark_best_applies_the_control_rule():
    marked = mark_best(_frame())
    assert marked["keeps_control"].tolist() == [True, True, True, False, False]
    best = marked[marked["best"]]
    assert best[["task", "value"]].values.tolist() == [["a", 0.4]]


def test_negated_state_task_arithmetic_and_mask():
    pre = {"visual.w": torch.zeros(4)}
    ft = {"visual.w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    out = negated_state("ta", pre, ft, 0.5)
    assert torch.allclose(out["visual.w"], torch.tensor([-0.5, -1.0, -1.5, -2.0]))
    mask = {"visual.w": torch.tensor([True, False, True, False])}
    masked = negated_state("talos-mask", pre, ft, 1.0, mask=mask)
    assert torch.allclose(masked["visual.w"], torch.tensor([-1.0, 0.0, -3.0, 0.0]))


def test_negated_state_sta_uses_the_importance_quantile():
    pre = {"visual.w": torch.zeros(4)}
    ft = {"visual.w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    importance = {"visual.w": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    out = negated_state("sta-lp", pre, ft, 0.5, importance=importance)
    # normalised importance [0, 1/3, 2/3, 1], median 0.5: the two largest are removed
    assert torch.allclose(out["visual.w"], torch.tensor([0.0, 0.0, -3.0, -4.0]))


def test_methods_without_negation_are_refused():
    pre = {"visual.w": torch.zeros(2)}
    with pytest.raises(InputError, match="has no negation"):
        negated_state("ties", pre, pre, 0.5)
