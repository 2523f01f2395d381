"""published.csv integrity and the join of our protocol tables with the papers' numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from taskarith_core.errors import InputError
from taskarith_core.real.reproduce import compare_with_published, paper_arch, published


def test_published_tables_are_complete_and_sourced():
    frame = published()
    assert set(frame["paper"]) == {"STA", "TaLoS"}
    assert frame["source"].notna().all() and frame["note"].notna().all()
    assert set(frame[frame["paper"] == "TaLoS"]["arch"]) == {"ViT-B-32", "ViT-B-16", "ViT-L-14"}
    sta = published("addition", "ViT-B-16")
    sta = sta[sta["paper"] == "STA"]
    for method, part in sta.groupby("method"):
        tasks = part[part["task"] != "mean"]["value"]
        assert len(tasks) == 6
        printed = part[part["task"] == "mean"]["value"].iloc[0]
        assert abs(tasks.mean() - printed) < 0.1, method  # the printed averages, as typed
    talos = published("negation", "ViT-L-14")
    value = talos[(talos["method"] == "talos-mask") & (talos["metric"] == "target")]["value"]
    assert value.tolist() == [10.68]


def test_paper_arch_strips_activation_variants():
    assert paper_arch("ViT-B-32-quickgelu") == "ViT-B-32"
    assert paper_arch("ViT-L-14") == "ViT-L-14"


def test_addition_join_puts_published_beside_ours():
    ours = pd.DataFrame(
        {
            "method": ["ta", "ta", "sta-lp"],
            "param": ["lam", "lam", "p"],
            "value": [0.3, 0.3, 0.7],
            "task": ["MNIST", "mean", "mean"],
            "accuracy": [0.9, 0.7, 0.75],
            "normalised": [0.95, 0.8, 0.85],
        }
    )
    table = compare_with_published(ours, "addition", "ViT-B-16-quickgelu")
    mean_ta = table[(table["method"] == "ta") & (table["task"] == "mean")].iloc[0]
    assert mean_ta["absolute"] == pytest.approx(70.0)
    assert mean_ta["TaLoS T1 absolute"] == pytest.approx(72.85)
    assert mean_ta["STA T2 absolute"] == pytest.approx(75.23)
    mnist = table[table["task"] == "MNIST"].iloc[0]
    assert mnist["STA T2 absolute"] == pytest.approx(98.97)


def test_negation_join_adds_zeroshot_row():
    ours = pd.DataFrame(
        {
            "method": ["ta"],
            "param": ["lam"],
            "value": [0.5],
            "task": ["mean"],
            "target_accuracy": [0.2],
            "target_zeroshot": [0.5],
            "control_accuracy": [0.6],
            "control_zeroshot": [0.63],
        }
    )
    table = compare_with_published(ours, "negation", "ViT-B-32")
    zs = table[table["method"] == "zeroshot"].iloc[0]
    assert zs["target"] == pytest.approx(50.0) and zs["TaLoS T2 control"] == pytest.approx(63.26)
    unknown_arch = compare_with_published(ours, "negation", "taskarith-zoo-vit")
    assert (unknown_arch["published"] == "none for this architecture").all()
    with pytest.raises(InputError, match="unknown protocol"):
        compare_with_published(ours, "fusion", "ViT-B-32")


@pytest.mark.parametrize(
    ("paradigm", "row", "absolute"),
    [("linearized", "linearized-ft", 80.01), ("l-lora", "l-lora", 80.61)],
)
def test_task_arithmetic_on_another_paradigm_fills_that_papers_row(paradigm, row, absolute):
    ours = pd.DataFrame(
        {
            "method": ["ta"],
            "param": ["lam"],
            "value": [0.3],
            "task": ["mean"],
            "accuracy": [0.7],
            "normalised": [0.8],
        }
    )
    table = compare_with_published(ours, "addition", "ViT-B-16-quickgelu", paradigm)
    assert list(table["method"]) == [row]
    assert table.iloc[0]["TaLoS T1 absolute"] == pytest.approx(absolute)
    assert table.iloc[0]["absolute"] == pytest.approx(70.0)
