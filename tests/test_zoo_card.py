"""The card: protocol numbers on the mini zoo, acceptance checks and claims computed, not typed."""

from __future__ import annotations

import json

from taskarith_core.zoo.card import acceptance_checks, card_markdown, paper_claims, write_card


def _card(ft=(90.0, 95.0), zs=(40.0, 50.0), ta=70.0, lp=72.0, rnd=73.0, neg=(0.5, 0.97)):
    per_task = {f"t{i}": {"zeroshot": z, "finetuned": f} for i, (z, f) in enumerate(zip(zs, ft))}
    negation = {"ta": {"target_ratio": neg[0], "control_ratio": neg[1]}}

    def add(value):
        return {"normalised": value}

    return {
        "paradigms": {
            "full": {
                "per_task": per_task,
                "addition": {"ta": add(ta), "sta-lp": add(lp), "sta-random": add(rnd)},
                "negation": negation,
            },
            "attention": {"addition": {"ta": add(ta + 3)}},
            "talos": {"addition": {"talos-mask": add(ta - 1)}},
        }
    }


def test_checks_follow_the_numbers():
    good = acceptance_checks(_card())
    assert all(c["ok"] for c in good.values())
    bad = acceptance_checks(_card(ft=(84.0, 99.0), ta=91.0, neg=(0.7, 0.97)))
    assert not bad["finetuned_ge_85_every_task"]["ok"]
    assert not bad["ta_normalised_lt_90"]["ok"]
    assert not bad["negation_target_le_60pct_control_ge_95pct"]["ok"]
    assert not acceptance_checks(_card(zs=(80.0, 80.0)))["finetuned_gain_ge_25_points"]["ok"]


def test_claims_follow_the_numbers():
    claims = paper_claims(_card())
    assert claims["sta_lp_beats_ta"]["holds"]
    assert not claims["lp_beats_random_importance"]["holds"]
    assert claims["attention_merges_better_than_full"]["holds"]
    assert not claims["talos_merges_better_than_full"]["holds"]
    assert not paper_claims(_card(lp=70.5))["sta_lp_beats_ta"]["holds"]  # within noise


def test_write_card_on_mini_zoo(mini_zoo_root, tmp_path):
    import shutil

    root = tmp_path / "zoo"
    shutil.copytree(mini_zoo_root, root)
    card = write_card(root, quick=True, notes=["a note"])
    saved = json.loads((root / "card.json").read_text())
    assert set(saved["paradigms"]) == {"full", "attention", "talos"}
    assert saved["checks"].keys() == card["checks"].keys()
    text = (root / "README.md").read_text()
    assert "| printed_digits |" in text and "a note" in text
    assert "talos-mask" in card_markdown(card)
