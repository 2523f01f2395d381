"""Disentanglement claims of the card decided by a paired comparison over the xi grid."""

from __future__ import annotations

import numpy as np

from taskarith_core.zoo.card_disentangle import disentanglement_claims, disentanglement_markdown


def _entry(cells: np.ndarray) -> dict:
    return {
        "disentanglement": {
            "xi": {"mean": float(cells.mean()), "pairs": 1, "samples_per_task": 8,
                   "cells": cells.tolist()},
            "kernel": {"mean_gap_points": 1.5},
            "localisation": {"own_task": 1.8, "other_tasks": 0.95},
        }
    }  # fmt: skip


def test_lower_xi_than_full_is_decided_on_the_grid():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 225)
    card = {
        "paradigms": {
            "full": _entry(0.5 + noise),
            "attention": _entry(0.2 + noise),  # clearly lower everywhere
            "talos": _entry(0.8 + noise),  # clearly higher
            "lota": _entry(0.5 + noise),
        }
    }
    claims = disentanglement_claims(card)
    assert claims["attention_xi_below_full"]["verdict"] == "holds"
    assert claims["attention_xi_below_full"]["difference"] > 0.29
    assert claims["talos_xi_below_full"]["verdict"] == "does not hold"
    assert claims["linearized_xi_below_full"]["verdict"] == "cannot tell"  # not measured
    same = {"paradigms": {"full": _entry(0.5 + noise), "attention": _entry(0.5 + noise[::-1])}}
    assert disentanglement_claims(same)["attention_xi_below_full"]["verdict"] == "cannot tell"
    text = "\n".join(disentanglement_markdown(card))
    assert "| attention | 0.2" in text and "TaLoS Fig. 3" in text
