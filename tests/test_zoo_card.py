"""The card: protocol numbers on the mini zoo, acceptance checks and claims computed, not typed."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from taskarith_core.zoo import PARADIGMS
from taskarith_core.zoo.card import acceptance_checks, card_markdown, paper_claims, write_card
from taskarith_core.zoo.claims import negation_summary, pack_correct, unpack_correct

N = 1000  # test images per task


def _run(accuracy: float, shift: int = 0) -> dict:
    """Packed per-image correctness: the first ``accuracy`` share of images right (rolled by
    ``shift``), so runs without shift are nested and their difference is certain."""
    hits = np.roll(np.arange(N) < round(accuracy * N), shift)
    return pack_correct({"t0": hits, "t1": hits})


def _card(ft=(90.0, 95.0), zs=(40.0, 50.0), ta=0.70, lp=0.72, rnd=0.73, neg=(0.5, 0.97), shift=0):
    per_task = {f"t{i}": {"zeroshot": z, "finetuned": f} for i, (z, f) in enumerate(zip(zs, ft))}
    negation = {"ta": {"target_ratio": neg[0], "control_ratio": neg[1]}}

    def add(value):
        return {"normalised": round(100 * value, 2)}

    return {
        "paradigms": {
            "full": {
                "per_task": per_task,
                "addition": {"ta": add(ta), "sta-lp": add(lp), "sta-random": add(rnd)},
                "negation": negation,
                "correct": {"ta": _run(ta), "sta-lp": _run(lp, shift), "sta-random": _run(rnd)},
            },
            "attention": {
                "per_task": per_task,
                "addition": {"ta": add(ta + 0.03)},
                "correct": {"ta": _run(ta + 0.03)},
            },
            "talos": {
                "per_task": per_task,
                "addition": {"talos-mask": add(ta - 0.01)},
                "correct": {"talos-mask": _run(ta - 0.01)},
            },
        }
    }


def test_packed_correctness_round_trips():
    hits = np.random.default_rng(0).random(13) > 0.5
    assert (unpack_correct(pack_correct({"t": hits}))["t"] == hits).all()


def test_checks_follow_the_numbers():
    good = acceptance_checks(_card())
    assert all(c["ok"] for c in good.values())
    bad = acceptance_checks(_card(ft=(84.0, 99.0), ta=0.91, neg=(0.7, 0.97)))
    assert not bad["finetuned_ge_85_every_task"]["ok"]
    assert not bad["ta_normalised_lt_90"]["ok"]
    assert not bad["negation_target_le_60pct_every_target_keeps_control"]["ok"]
    assert not acceptance_checks(_card(zs=(80.0, 80.0)))["finetuned_gain_ge_25_points"]["ok"]


def test_negation_counts_targets_not_means():
    table = pd.DataFrame(
        {
            "method": ["ta"] * 3,
            "task": ["a", "b", "mean"],
            "target_accuracy": [0.2, 0.3, 0.25],
            "target_zeroshot": [0.5, 0.5, 0.5],
            "control_accuracy": [0.99, 0.90, 0.945],
            "control_zeroshot": [0.96, 0.96, 0.96],
        }
    )
    got = negation_summary(table)["ta"]
    assert got["control_ratio"] == round(0.945 / 0.96, 3)  # ratio of means: 0.984, looks fine
    assert got["control_ratio_per_target"] == round((0.99 / 0.96 + 0.90 / 0.96) / 2, 3)
    assert (got["targets_keeping_control"], got["targets"]) == (1, 2)
    assert got["targets_losing_control"] == ["b"]
    card = _card()
    card["paradigms"]["full"]["negation"] = {"ta": got}
    check = acceptance_checks(card)["negation_target_le_60pct_every_target_keeps_control"]
    assert not check["ok"] and check["ta"]["targets_keeping_control"] == "1 of 2"


def test_claims_follow_the_paired_comparison():
    claims = paper_claims(_card())
    assert claims["sta_lp_beats_ta"]["verdict"] == "holds"
    assert claims["sta_lp_beats_ta"]["interval"][0] > 0
    assert claims["lp_beats_random_importance"]["verdict"] == "does not hold"
    assert claims["attention_merges_better_than_full"]["verdict"] == "holds"
    assert claims["talos_merges_better_than_full"]["verdict"] == "does not hold"
    # 2 points more, but on other images: the paired interval contains zero
    shifted = paper_claims(_card(lp=0.705, shift=400))["sta_lp_beats_ta"]
    assert shifted["verdict"] == "cannot tell" and not shifted["holds"]
    card = _card()
    del card["paradigms"]["full"]["correct"]
    assert paper_claims(card)["sta_lp_beats_ta"]["verdict"] == "cannot tell"


def test_write_card_on_mini_zoo(mini_zoo_root, tmp_path):
    import shutil

    root = tmp_path / "zoo"
    shutil.copytree(mini_zoo_root, root)
    card = write_card(root, quick=True, notes=["a note"])
    saved = json.loads((root / "card.json").read_text())
    assert set(saved["paradigms"]) == set(PARADIGMS)  # every paradigm the zoo holds
    assert saved["checks"].keys() == card["checks"].keys()
    text = (root / "README.md").read_text()
    assert "| printed_digits |" in text and "a note" in text
    assert "talos-mask" in card_markdown(card)
    assert set(saved["paradigms"]["full"]["correct"]) >= {"ta", "zeroshot", "finetuned"}
    assert all(
        c["verdict"] in ("holds", "does not hold", "cannot tell") for c in card["claims"].values()
    )
    assert "targets keeping 95% on test" in text
    # disentanglement rows and claims for every paradigm, measured as the papers do
    assert "## Disentanglement per paradigm" in text and "TaLoS Fig. 3" in text
    for paradigm in PARADIGMS:
        rows = saved["paradigms"][paradigm]["disentanglement"]
        assert len(rows["xi"]["cells"]) == 15 * 15 and rows["xi"]["mean"] >= 0
    assert {"attention_xi_below_full", "linearized_xi_below_full"} <= set(card["claims"])
    merges = card["claims"]["linearized_merges_better_than_full"]
    assert merges["verdict_absolute"] in ("holds", "does not hold", "cannot tell")
