"""The page's one number format: percent with two decimals, means rounded once."""

from __future__ import annotations

import pandas as pd

from taskarith_core.numbers import mean_percent, percent, percent_frame, percent_text, styled


def test_percent_rounds_to_two_decimals():
    assert percent(0.62479) == 62.48
    assert percent(pd.Series([0.168, 0.95934])).tolist() == [16.8, 95.93]
    assert percent_text(0.168) == "16.80%"


def test_a_mean_is_rounded_once_not_taken_of_rounded_values():
    # each rounds to 62.47, 62.47, 62.48 (mean 62.47); the fractions' mean is 62.4753 -> 62.48
    values = [0.624749, 0.624749, 0.62476]
    rounded_mean = round(sum(percent(v) for v in values) / 3, 2)
    assert mean_percent(values) == 62.48 and rounded_mean == 62.47


def test_styled_tables_show_percent_with_two_decimals_and_ratios_with_three():
    frame = pd.DataFrame({"task": ["a", "b"], "before": [16.8, 95.93], "ratio": [0.5, 0.8561]})
    html = styled(frame, ["before"]).to_html()
    assert "16.80" in html and "95.93" in html and "0.500" in html and "0.856" in html


def test_analysis_tables_show_accuracies_in_percent():
    frame = pd.DataFrame({"value": [0.1], "task": ["a"], "accuracy": [0.5], "normalised": [0.625]})
    shown, columns = percent_frame(frame)
    assert columns == ["accuracy (%)", "normalised (%)"]
    assert shown["normalised (%)"].tolist() == [62.5] and shown["value"].tolist() == [0.1]
