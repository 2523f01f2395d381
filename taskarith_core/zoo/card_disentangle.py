"""The card's disentanglement rows per paradigm and the papers' claims about them.

Measured as the papers do, and said so in each row: xi is the prediction disagreement (TaLoS
Eq. 10) on the 15 x 15 grid on [-2, 2]^2 (Ortiz-Jimenez et al.), 2048 test images per task or the
whole split, averaged over every task pair; the kernel test compares the non-linear fine-tuned
tower with its post-hoc linearisation (attention-only paper Fig. 3); function localisation divides
the accuracy of theta_pre + tau_i on task j by the pre-trained model's accuracy on j (TaLoS Fig. 3).
Linearised paradigms are merged and evaluated in the linearised model throughout.

A claim "paradigm A has lower xi than full" is a paired bootstrap over the grid's cells (the same
coefficients and the same images for both): "holds" when the 95% interval of full minus A lies
above zero, "does not hold" when below, "cannot tell" otherwise.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ..stats import paired_difference
from .source import load_zoo

__all__ = [
    "XI_CLAIMS",
    "disentanglement_claims",
    "disentanglement_markdown",
    "measure_disentanglement",
]

#: paradigms the papers say have lower xi than full fine-tuning
XI_CLAIMS = ("attention", "talos", "linearized")
_XI_NOTE = (
    "prediction disagreement on the 15 x 15 grid on [-2, 2]^2, mean over every task pair; "
    "linearised paradigms evaluated linearised"
)
_LOC_NOTE = "accuracy of theta_pre + tau_i on task j / pre-trained accuracy on j (TaLoS Fig. 3)"


def _xi(source: Any, device: Any, quick: bool) -> dict:
    from ..analyses.xi import XI_PRESETS, disentanglement_grid

    pairs = list(combinations(source.tasks, 2))[: 1 if quick else None]
    samples = 64 if quick else 2048
    cells = None
    for task1, task2 in pairs:
        frame = disentanglement_grid(
            source, task1, task2, grid=XI_PRESETS["ortiz"], samples=samples, device=device
        )
        values = frame.sort_values(["alpha1", "alpha2"])["xi"].to_numpy()
        cells = values if cells is None else cells + values
    cells = cells / len(pairs)
    return {
        "mean": round(float(cells.mean()), 4),
        "pairs": len(pairs),
        "samples_per_task": samples,
        "note": _XI_NOTE,
        "cells": [round(float(c), 5) for c in cells],
    }


def _kernel(source: Any, device: Any, quick: bool) -> dict:
    from ..analyses.kernel import kernel_test

    frame = kernel_test(source, samples=64 if quick else 512, device=device)
    return {
        "mean_gap_points": round(100 * float(frame["gap"].mean()), 2),
        "per_task_gap_points": {t: round(100 * float(g), 2) for t, g in zip(frame.task, frame.gap)},
        "note": "non-linear minus post-hoc linearised fine-tuned accuracy (kernel regime: small)",
    }


def _localisation(source: Any, device: Any, quick: bool) -> dict:
    from ..analyses.geometry import localisation_matrix

    frame = localisation_matrix(source, max_samples=64 if quick else None, device=device)
    own = frame["edited_with"] == frame["evaluated_on"]
    return {
        "own_task": round(float(frame.loc[own, "ratio_zeroshot"].mean()), 3),
        "other_tasks": round(float(frame.loc[~own, "ratio_zeroshot"].mean()), 3),
        "note": _LOC_NOTE,
    }


def measure_disentanglement(
    root: str | Path, paradigm: str, device: Any = "cpu", quick: bool = False
) -> dict:
    """xi, kernel test and function localisation of one paradigm of the zoo at ``root``."""
    source = load_zoo(paradigm, root)
    return {
        "xi": _xi(source, device, quick),
        "kernel": _kernel(source, device, quick),
        "localisation": _localisation(source, device, quick),
    }


def _cells(card: dict, paradigm: str) -> np.ndarray | None:
    entry = card["paradigms"].get(paradigm, {}).get("disentanglement")
    return None if entry is None else np.asarray(entry["xi"]["cells"], dtype=float)


def disentanglement_claims(card: dict) -> dict[str, dict]:
    """ "<paradigm> has lower xi than full" for each paradigm measured, decided on the grid."""
    claims = {}
    full = _cells(card, "full")
    for paradigm in XI_CLAIMS:
        mine = _cells(card, paradigm)
        name = f"{paradigm}_xi_below_full"
        if full is None or mine is None or full.size != mine.size:
            claims[name] = {"verdict": "cannot tell", "holds": False, "note": "not measured"}
            continue
        got = paired_difference({"grid": full}, {"grid": mine})  # full minus paradigm
        claims[name] = {
            "verdict": got.verdict,
            "holds": got.verdict == "holds",
            paradigm: round(float(mine.mean()), 4),
            "full": round(float(full.mean()), 4),
            "difference": round(float(got.difference.mean), 4),
            "interval": [round(float(got.difference.low), 4), round(float(got.difference.high), 4)],
            "note": "paired over the grid's cells (same coefficients, same images)",
        }
    return claims


def disentanglement_markdown(card: dict) -> list[str]:
    """The card's table of xi, kernel gap and localisation per paradigm (with how each is
    measured); empty when no paradigm has them."""
    rows = []
    for name, entry in card["paradigms"].items():
        d = entry.get("disentanglement")
        if d:
            xi, kernel, loc = d["xi"], d["kernel"], d["localisation"]
            rows.append(
                f"| {name} | {xi['mean']:.4f} ({xi['pairs']} pairs, {xi['samples_per_task']} "
                f"images) | {kernel['mean_gap_points']:.2f} | {loc['own_task']:.3f} | "
                f"{loc['other_tasks']:.3f} |"
            )
    if not rows:
        return []
    return [
        "",
        "## Disentanglement per paradigm",
        "",
        f"xi: {_XI_NOTE}. Kernel gap: non-linear minus post-hoc linearised fine-tuned accuracy "
        f"(points). Localisation: {_LOC_NOTE}, on the edited task and on the others.",
        "",
        "| paradigm | mean xi | kernel gap | localisation, own task | other tasks |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
