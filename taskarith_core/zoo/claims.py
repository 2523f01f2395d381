"""The card's verdicts: acceptance checks and the papers' claims, decided from measured results.

A claim "A beats B" is decided by a paired bootstrap over the test images both were evaluated on
(:mod:`taskarith_core.stats`): "holds" when the 95% interval of the difference in mean normalised
accuracy lies above zero, "does not hold" when below, "cannot tell" when it contains zero. Per-image
correctness is stored in the card packed as bits, so the claims can be recomputed from the card.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..stats import Comparison, mean_over_seeds, paired_difference

__all__ = [
    "CONTROL_KEEP",
    "acceptance_checks",
    "negation_summary",
    "pack_correct",
    "paper_claims",
    "unpack_correct",
]

#: a negation keeps its control when the control keeps this fraction of its zero-shot accuracy
CONTROL_KEEP = 0.95


def pack_correct(correct: Mapping[str, Any]) -> dict[str, dict]:
    """task -> per-image correctness as {"n": images, "bits": hex of the packed bits} (JSON)."""
    out = {}
    for task, hits in correct.items():
        array = np.asarray(hits.cpu() if hasattr(hits, "cpu") else hits, dtype=bool)
        out[task] = {"n": int(array.size), "bits": np.packbits(array).tobytes().hex()}
    return out


def unpack_correct(packed: Mapping[str, dict]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_correct`."""
    return {
        task: np.unpackbits(np.frombuffer(bytes.fromhex(v["bits"]), dtype=np.uint8))[
            : v["n"]
        ].astype(bool)
        for task, v in packed.items()
    }


def _round(value: float) -> float:
    return round(float(value) * 100, 2)


def negation_summary(table: pd.DataFrame, keep: float = CONTROL_KEEP) -> dict[str, dict]:
    """Per method: means, both ratio summaries (ratio of means; mean of per-target ratios) and
    how many targets keep ``keep`` of the control's zero-shot accuracy on test."""
    out = {}
    for method, part in table.groupby("method", sort=False):
        targets = part[part["task"] != "mean"]
        target, target0 = targets["target_accuracy"], targets["target_zeroshot"]
        control, control0 = targets["control_accuracy"], targets["control_zeroshot"]
        control_ratios = control / control0
        out[method] = {
            "target": _round(target.mean()),
            "target_zeroshot": _round(target0.mean()),
            "control": _round(control.mean()),
            "control_zeroshot": _round(control0.mean()),
            "target_ratio": round(float(target.mean() / target0.mean()), 3),
            "control_ratio": round(float(control.mean() / control0.mean()), 3),
            "target_ratio_per_target": round(float((target / target0).mean()), 3),
            "control_ratio_per_target": round(float(control_ratios.mean()), 3),
            "targets": int(len(targets)),
            "targets_keeping_control": int((control_ratios >= keep).sum()),
            "targets_losing_control": [
                str(t) for t, r in zip(targets["task"], control_ratios) if r < keep
            ],
        }
    return out


def acceptance_checks(card: dict) -> dict[str, dict]:
    """The zoo's acceptance criteria on the full-fine-tuning paradigm, each with its numbers.

    Negation counts targets: every target must keep 95% of the control's zero-shot accuracy on
    test (a good mean can hide targets that do not)."""
    full = card["paradigms"]["full"]
    per_task = full["per_task"]
    ft = {t: v["finetuned"] for t, v in per_task.items()}
    gain = sum(v["finetuned"] - v["zeroshot"] for v in per_task.values()) / len(per_task)
    ta = full["addition"]["ta"]["normalised"]
    neg = {}
    for method, v in full["negation"].items():
        keeping = v.get("targets_keeping_control")
        neg[method] = {
            "target_ratio": v["target_ratio"],
            "control_ratio": v["control_ratio"],
            "targets_keeping_control": (
                f"{keeping} of {v['targets']}" if keeping is not None else None
            ),
            "ok": v["target_ratio"] <= 0.6
            and (keeping == v["targets"] if keeping is not None else v["control_ratio"] >= 0.95),
        }
    oks = [v.pop("ok") for v in neg.values()]  # every method's flag, not the first failing one
    return {
        "finetuned_ge_85_every_task": {"ok": min(ft.values()) >= 85, "min": min(ft.values())},
        "finetuned_gain_ge_25_points": {"ok": gain >= 25, "mean_gain": round(gain, 2)},
        "ta_normalised_lt_90": {"ok": ta < 90, "ta_normalised": ta},
        "negation_target_le_60pct_every_target_keeps_control": {"ok": all(oks), **neg},
    }


def _normalised(paradigm: dict, run: str) -> dict[str, np.ndarray] | None:
    """Per-image correctness / fine-tuned accuracy (so the mean over tasks is normalised)."""
    correct = paradigm.get("correct", {})
    if run not in correct:
        return None
    ft = {t: v["finetuned"] / 100 for t, v in paradigm["per_task"].items()}
    return {t: hits / ft[t] for t, hits in unpack_correct(correct[run]).items()}


def _seeds(paradigm: dict, method: str) -> dict[str, np.ndarray] | None:
    runs = [_normalised(paradigm, f"{method}@seed{s}") for s in (0, 1, 2)]
    return mean_over_seeds(runs) if all(r is not None for r in runs) else None


def _claim(a: dict | None, b: dict | None, numbers: dict) -> dict:
    """A claim "a beats b" with its paired comparison, or "cannot tell" without per-image data."""
    if a is None or b is None:
        return {"verdict": "cannot tell", "holds": False, **numbers, "note": "no per-image data"}
    got: Comparison = paired_difference(a, b)
    d = got.difference
    return {
        "verdict": got.verdict,
        "holds": got.verdict == "holds",
        **numbers,
        "difference": _round(d.mean),
        "interval": [_round(d.low), _round(d.high)],
    }


def _best_on_val(addition: dict[str, dict]) -> str:
    """Task arithmetic on a paradigm's vectors with the lambda grid (plain or TaLoS-extended) that
    scores best on validation (never the test score)."""
    methods = {m: v for m, v in addition.items() if m in ("ta", "talos-mask")}
    return max(methods, key=lambda m: methods[m].get("val_normalised") or -1.0)


def paper_claims(card: dict) -> dict[str, dict]:
    """The papers' comparative claims on this zoo, each decided by a paired comparison on the
    test images of the mean normalised accuracy (95% interval of the difference)."""
    p = card["paradigms"]
    full = p["full"]["addition"]
    claims: dict[str, dict] = {}
    if "sta-lp" in full:
        claims["sta_lp_beats_ta"] = _claim(
            _normalised(p["full"], "sta-lp"),
            _normalised(p["full"], "ta"),
            {"sta_lp": full["sta-lp"]["normalised"], "ta": full["ta"]["normalised"]},
        )
    repeats = p["full"].get("seed_repeats") or {}
    if "sta-random" in repeats and "sta-lp" in repeats:
        claims["lp_beats_random_importance"] = _claim(
            _seeds(p["full"], "sta-lp"),
            _seeds(p["full"], "sta-random"),
            {
                "sta_lp_mean_3_seeds": round(statistics.mean(repeats["sta-lp"]), 2),
                "sta_random_mean_3_seeds": round(statistics.mean(repeats["sta-random"]), 2),
            },
        )
    elif "sta-random" in full and "sta-lp" in full:
        claims["lp_beats_random_importance"] = _claim(
            _normalised(p["full"], "sta-lp"),
            _normalised(p["full"], "sta-random"),
            {
                "sta_lp": full["sta-lp"]["normalised"],
                "sta_random": full["sta-random"]["normalised"],
            },
        )
    for paradigm in ("attention", "talos", "linearized"):
        if paradigm not in p:
            continue
        method = _best_on_val(p[paradigm]["addition"])
        claims[f"{paradigm}_merges_better_than_full"] = _claim(
            _normalised(p[paradigm], method),
            _normalised(p["full"], "ta"),
            {
                paradigm: p[paradigm]["addition"][method]["normalised"],
                "method_chosen_on_val": method,
                "full_ta": full["ta"]["normalised"],
                f"{paradigm}_absolute": p[paradigm]["addition"][method].get("accuracy"),
                "full_ta_absolute": full["ta"].get("accuracy"),
            },
        )
        claims[f"{paradigm}_merges_better_than_full"]["verdict_absolute"] = _absolute_verdict(
            p[paradigm], method, p["full"]
        )
    return claims


def _absolute_verdict(paradigm: dict, method: str, full: dict) -> str:
    """The same comparison on absolute accuracy (per-image correctness, not normalised)."""
    mine, theirs = paradigm.get("correct", {}), full.get("correct", {})
    if method not in mine or "ta" not in theirs:
        return "cannot tell"
    a = {t: h.astype(float) for t, h in unpack_correct(mine[method]).items()}
    b = {t: h.astype(float) for t, h in unpack_correct(theirs["ta"]).items()}
    return paired_difference(a, b).verdict
