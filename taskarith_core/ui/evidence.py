"""What the Merge tab shows beside a run's own numbers: its references with 95% intervals, the
paired comparison of two runs, and what the zoo's card measured about the papers' claims.

Only formatting and figure marks here; the numbers come from
:mod:`taskarith_core.analyses.references` (imported on use: the page is served before torch loads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ..errors import InputError

__all__ = [
    "CLAIM_SENTENCES",
    "compare_runs",
    "history_extras",
    "interval_markdown",
    "mark_references",
    "zoo_claims_markdown",
]

#: the card's claims as a visitor reads them
CLAIM_SENTENCES = {
    "sta_lp_beats_ta": "STA with lp importance merges better than task arithmetic",
    "lp_beats_random_importance": "lp importance beats random importance in STA (3 seeds)",
    "attention_merges_better_than_full": (
        "attention-only fine-tuning merges better than full fine-tuning"
    ),
    "talos_merges_better_than_full": "TaLoS sparse fine-tuning merges better than full fine-tuning",
}
_TA = "task arithmetic, lambda chosen on val"
_RANDOM = "same method, random importance (3 seeds)"


def _ends(text: str) -> tuple[float, float]:
    """``[61.20, 63.71]`` -> (61.20, 63.71)."""
    low, high = text.strip("[]").split(", ")
    return float(low), float(high)


def mark_references(figure: go.Figure, references: pd.DataFrame) -> go.Figure:
    """95% interval whiskers on the mean bars, and the task-arithmetic and random-importance
    references as dashed lines across both panels (absolute and normalised)."""
    rows = references.set_index("model")
    series = {"merged": "this run", "zero-shot": "zero-shot"}
    for trace in figure.data:
        model = series.get(trace.name)
        if model is None or model not in rows.index:
            continue
        first = trace.xaxis in (None, "x")
        column = "95% interval" if first else "normalised 95% interval"
        low, high = _ends(rows.loc[model, column])
        mean = float(rows.loc[model, "mean" if first else "mean normalised"])
        count = len(trace.y)
        trace.error_y = {
            "type": "data",
            "symmetric": False,
            "array": [0.0] * (count - 1) + [max(high - mean, 0.0)],
            "arrayminus": [0.0] * (count - 1) + [max(mean - low, 0.0)],
            "color": "#333",
            "thickness": 1.5,
            "width": 4,
        }
    # the two labels sit at opposite corners of their lines so that close means stay readable
    placed = ((_TA, "#2ca02c", "top left"), (_RANDOM, "#9467bd", "bottom right"))
    for model, colour, corner in placed:
        if model not in rows.index:
            continue
        for col, column in ((1, "mean"), (2, "mean normalised")):
            value = float(rows.loc[model, column])
            figure.add_hline(
                y=value,
                line={"dash": "dash", "color": colour, "width": 1.5},
                annotation_text=f"{model.split(',')[0]} {value:.2f}",
                annotation_font_size=10,
                annotation_position=corner,
                row=1,
                col=col,
            )
    return figure


#: the paired verdict "the run is better than this reference" in plain words
_VERDICT_WORDS = {
    "holds": "the run is better",
    "does not hold": "the run is worse",
    "cannot tell": "cannot tell them apart",
}


def interval_markdown(references: pd.DataFrame) -> str:
    """One line per reference: its mean, interval and how the run compares on the same images."""
    run = references.iloc[0]
    lines = [
        f"95% interval of the run's mean: {run['95% interval']} (normalised "
        f"{run['normalised 95% interval']}). References on the same images, normalised %:"
    ]
    for _, row in references.iloc[1:].iterrows():
        note = f"; {row['note']}" if row["note"] else ""
        lines.append(
            f"- {row['model']}: {row['mean normalised']:.2f} {row['normalised 95% interval']}"
            f"{note}; run minus it {row['run minus it (normalised)']}: "
            f"**{_VERDICT_WORDS.get(row['verdict: run better?'], row['verdict: run better?'])}**"
        )
    return "\n".join(lines)


def history_extras(references: pd.DataFrame, config: dict) -> dict[str, Any]:
    """Runs-table columns: the run's interval and its verdict against the references (the config
    is kept, hidden, so two runs can be compared later)."""
    rows = references.set_index("model")
    out: dict[str, Any] = {"95% interval": rows.loc["this run", "95% interval"]}
    for model, column in ((_TA, "vs task arithmetic"), (_RANDOM, "vs random importance")):
        if model in rows.index:
            out[column] = (
                f"{rows.loc[model, 'run minus it (normalised)']} "
                f"{rows.loc[model, 'verdict: run better?']}"
            )
    out["_config"] = config
    return out


def _run_config(history: list[dict], number: Any) -> dict:
    try:
        index = int(number)
    except (TypeError, ValueError):
        index = 0
    found = [row for row in history if row.get("run") == index]
    if not found or "_config" not in found[0]:
        runs = ", ".join(str(row.get("run")) for row in history) or "none yet"
        raise InputError(f"there is no run {index} in the runs table (runs: {runs}); pick one")
    return found[0]["_config"]


def compare_runs(history: list[dict] | None, first: Any, second: Any) -> str:
    """Run A minus run B on the same images: normalised difference, interval, verdict."""
    from ..analyses.references import run_references
    from ..runconfig import RunConfig
    from ..stats import paired_difference
    from .common import explorer

    history = list(history or [])
    a = RunConfig.from_dict(_run_config(history, first))
    b = RunConfig.from_dict(_run_config(history, second))
    same = ("source", "paradigm", "zoo_root", "manifest", "split", "max_samples")
    if any(getattr(a, f) != getattr(b, f) for f in same) or sorted(a.tasks) != sorted(b.tasks):
        raise InputError(
            "these two runs were not evaluated on the same images; compare runs with the same "
            "source, tasks, split and evaluation images"
        )
    ra = run_references(explorer(a), a)
    rb = run_references(explorer(b), b)
    weights = {t: 1.0 / ra.finetuned[t] for t in ra.tasks}
    got = paired_difference(ra.run, rb.run, weights)
    meaning = {
        "holds": f"run {int(first)} is better",
        "does not hold": f"run {int(second)} is better",
        "cannot tell": "the images measured cannot separate them",
    }[got.verdict]
    return (
        f"Run {int(first)} minus run {int(second)} (mean normalised accuracy, points, "
        f"{got.images} paired images): {got.difference.text()}; the interval "
        f"{'excludes' if got.difference.excludes_zero() else 'contains'} zero: **{meaning}**."
    )


def zoo_claims_markdown(card_path: str | Path) -> str:
    """ "What this zoo shows": each of the card's claims with its verdict and numbers."""
    path = Path(card_path)
    if not path.is_file():
        return ""
    claims = json.loads(path.read_text()).get("claims") or {}
    lines = []
    for name, claim in claims.items():
        verdict = claim.get("verdict") or ("holds" if claim.get("holds") else "does not hold")
        numbers = ", ".join(
            f"{k.replace('_', ' ')} {v}"
            for k, v in claim.items()
            if k not in ("verdict", "holds", "note") and not isinstance(v, (list, dict))
        )
        interval = claim.get("interval")
        how = (
            f"; difference interval [{interval[0]:.2f}, {interval[1]:.2f}]"
            if interval
            else " (decided by a 1-point margin; re-measure the card for intervals)"
        )
        sentence = CLAIM_SENTENCES.get(name, name.replace("_", " "))
        lines.append(f"- {sentence}: **{verdict}** ({numbers}{how})")
    return "\n".join(lines)
