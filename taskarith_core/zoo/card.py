"""The zoo card: measured test numbers of every paradigm, sanity checks of the zoo, the claims.

Every number goes through :mod:`taskarith_core.analyses.protocol`: hyperparameters (lambda, p) are
chosen on the validation split and reported on the test split, whichever way they fall. The card is
written as ``card.json`` and a markdown ``README.md`` beside the weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_path
from ..progress import Progress, no_progress
from .card_disentangle import (
    disentanglement_claims,
    disentanglement_markdown,
    measure_disentanglement,
)
from .claims import acceptance_checks, negation_summary, pack_correct, paper_claims
from .source import load_zoo, zoo_paradigms

__all__ = [
    "ADDITION_METHODS",
    "NEGATION_METHODS",
    "acceptance_checks",
    "card_markdown",
    "measure_card",
    "paper_claims",
    "recipe_notes",
    "write_card",
]

#: per paradigm: merges measured (sta-random is the control for every importance metric)
ADDITION_METHODS = {
    "full": ("ta", "ties", "sta-lp", "sta-amp", "sta-lpamp", "sta-random"),
    "attention": ("ta", "sta-lp", "sta-random"),
    "talos": ("ta", "talos-mask"),  # talos-mask: lambda range extended by 1 / (1 - k) (TaLoS A.1)
    "linearized": ("ta",),  # merged and evaluated in the linearised model
    "l-lora": ("ta",),
    "lota": ("ta",),
}
NEGATION_METHODS = {
    "full": ("ta", "sta-lp"),
    "attention": ("ta",),
    "talos": ("ta", "talos-mask"),
    "linearized": ("ta",),
    "l-lora": ("ta",),
    "lota": ("ta",),
}
#: merges re-run with other seeds for the Ns importance samples (lp against its random control)
SEED_REPEATS = {"full": ("sta-lp", "sta-random")}
QUICK = {"full": ("ta", "sta-lp"), "attention": ("ta",), "talos": ("talos-mask",)}
QUICK.update({p: ("ta",) for p in ("linearized", "l-lora", "lota")})


def _round(value: Any) -> Any:
    return round(float(value) * 100, 2) if isinstance(value, float) else value


def _addition_summary(table: pd.DataFrame) -> dict[str, dict]:
    means = table[table["task"] == "mean"]
    out = {}
    for _, row in means.iterrows():
        out[row["method"]] = {
            "param": row["param"] if isinstance(row["param"], str) else None,
            "value": None if pd.isna(row["value"]) else float(row["value"]),
            "accuracy": _round(float(row["accuracy"])),
            "normalised": _round(float(row["normalised"])),
            "val_normalised": _round(float(row["selected_score"]))
            if "selected_score" in row and not pd.isna(row["selected_score"])
            else None,
        }
    return out


def _per_task(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    refs = table[table["method"].isin(["zeroshot", "finetuned"]) & (table["task"] != "mean")]
    return {
        t: {m: _round(float(a)) for m, a in zip(part["method"], part["accuracy"])}
        for t, part in refs.groupby("task", sort=False)
    }


def _split_correct(table: pd.DataFrame, suffix: str = "") -> tuple[pd.DataFrame, dict]:
    """The table without its per-image column, and {method+suffix: packed correctness}."""
    rows = table[table["task"] != "mean"]
    packed = {
        f"{method}{suffix}": pack_correct(dict(zip(part["task"], part["correct"])))
        for method, part in rows.groupby("method", sort=False)
    }
    return table.drop(columns="correct"), packed


def _seed_repeats(source: Any, methods: Sequence[str], device: Any) -> tuple[dict, dict]:
    """Mean normalised test accuracy of importance-based merges for Ns-sample seeds 0, 1, 2, and
    their per-image correctness (``method@seedN``)."""
    from ..analyses.protocol import addition_protocol

    if not methods:
        return {}, {}
    out: dict[str, list[float]] = {m: [] for m in methods}
    correct: dict[str, dict] = {}
    for seed in (0, 1, 2):
        table = addition_protocol(
            source, methods, device=device, seed=seed, include_references=False, keep_correct=True
        )
        table, packed = _split_correct(table, f"@seed{seed}")
        correct.update(packed)
        for method, row in _addition_summary(table).items():
            out[method].append(row["normalised"])
    return out, correct


def measure_paradigm(root: str | Path, paradigm: str, device: Any = "cpu", quick: bool = False):
    """Addition and negation protocols on one paradigm of the zoo at ``root``."""
    from ..analyses.protocol import addition_protocol, negation_protocol

    started = time.time()
    source = load_zoo(paradigm, root)
    methods = QUICK if quick else ADDITION_METHODS
    addition = addition_protocol(source, methods[paradigm], device=device, keep_correct=True)
    addition, correct = _split_correct(addition)
    negation = negation_protocol(
        source, (QUICK if quick else NEGATION_METHODS)[paradigm], device=device
    )
    repeats, seeds = (
        ({}, {}) if quick else _seed_repeats(source, SEED_REPEATS.get(paradigm, ()), device)
    )
    return {
        "seed_repeats": repeats,
        "per_task": _per_task(addition),
        "addition": _addition_summary(addition),
        "negation": negation_summary(negation),
        "addition_table": addition.to_dict(orient="records"),
        "negation_table": negation.to_dict(orient="records"),
        "correct": {**correct, **seeds},
        "disentanglement": measure_disentanglement(root, paradigm, device, quick),
        "seconds": round(time.time() - started, 1),
    }


def measure_card(
    root: str | Path,
    device: Any = "cpu",
    progress: Progress = no_progress,
    quick: bool = False,
    paradigms: Sequence[str] | None = None,
    previous: dict | None = None,
) -> dict:
    """Measure ``paradigms`` (default: all the zoo has; others are kept from ``previous``);
    checks once all are present."""
    have = zoo_paradigms(root)
    paradigms = have if paradigms is None else list(paradigms)
    card: dict[str, Any] = {"paradigms": {}, "protocol": "chosen on val, reported on test"}
    if previous:
        card["paradigms"].update(previous.get("paradigms", {}))
    for index, paradigm in enumerate(paradigms):
        card["paradigms"][paradigm] = measure_paradigm(root, paradigm, device, quick)
        progress(index + 1, len(paradigms), paradigm)
    if all(p in card["paradigms"] for p in have):
        card["checks"] = acceptance_checks(card)
        card["claims"] = {**paper_claims(card), **disentanglement_claims(card)}
    return card


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def _kept(negation: dict) -> str | None:
    keeping = negation.get("targets_keeping_control")
    if keeping is None:
        return None
    losing = negation.get("targets_losing_control") or []
    return f"{keeping} of {negation['targets']}" + (
        f" (not: {', '.join(losing)})" if losing else ""
    )


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def card_markdown(card: dict) -> str:
    """The card as markdown tables (what ``zoo info`` prints and the README quotes)."""
    lines = ["# Embedded zoo card (measured; test split, hyperparameters chosen on val)", ""]
    lines += _merge_lines(card["paradigms"]) + disentanglement_markdown(card)
    lines += _checks_and_claims_lines(card)
    for note in card.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _merge_lines(p: dict) -> list[str]:
    """Fine-tuned accuracy per task, then the addition and negation tables of every paradigm."""
    tasks = list(p["full"]["per_task"])
    header = ["task", "zero-shot", *(f"FT {name}" for name in p)]
    rows = [
        [t, p["full"]["per_task"][t]["zeroshot"], *(p[n]["per_task"][t]["finetuned"] for n in p)]
        for t in tasks
    ]
    lines = _table(header, rows) + ["", "## Task addition (all tasks merged)", ""]
    rows = [
        [name, m, v["param"], v["value"], v["accuracy"], v["normalised"]]
        for name in p
        for m, v in p[name]["addition"].items()
    ]
    lines += _table(["paradigm", "method", "param", "chosen", "abs. acc.", "norm. acc."], rows)
    lines += [
        "",
        "## Task negation (target tasks; value chosen on val where control >= 95% of zero-shot)",
        "",
    ]
    keys = ("target", "target_zeroshot", "target_ratio", "control", "control_zeroshot")
    rows = [
        [name, m, *(v[k] for k in keys), v["control_ratio"], v.get("control_ratio_per_target"),
         _kept(v)]
        for name in p
        for m, v in p[name]["negation"].items()
    ]  # fmt: skip
    header = [
        "paradigm",
        "method",
        "target",
        "target ZS",
        "ratio",
        "control",
        "control ZS",
        "ratio of means",
        "mean of ratios",
        "targets keeping 95% on test",
    ]
    return lines + _table(header, rows)


def _checks_and_claims_lines(card: dict) -> list[str]:
    """The sanity checks, then the papers' claims with how they were decided."""
    lines = ["", "## Sanity checks of the zoo", ""]
    for name, check in card["checks"].items():
        detail = ", ".join(f"{k}={v}" for k, v in check.items() if k != "ok")
        lines.append(f"- {name}: **{'pass' if check['ok'] else 'FAIL'}** ({detail})")
    paired = all("verdict" in claim for claim in card["claims"].values())
    how = (
        "Decided by a paired bootstrap over the test images: the 95% interval of the difference "
        "in mean normalised accuracy (points) lies above zero (holds), below it (does not hold) "
        "or contains it (cannot tell)."
        if paired
        else "Decided by a gap of more than 1 point of mean normalised accuracy (measured before "
        "per-image results were kept; re-measure the card for paired intervals)."
    )
    lines += ["", "## The papers' claims on this zoo", "", how, ""]
    for name, claim in card["claims"].items():
        skip = ("holds", "verdict")
        detail = ", ".join(f"{k}={v}" for k, v in claim.items() if k not in skip)
        verdict = claim.get("verdict") or ("holds" if claim["holds"] else "does not hold")
        lines.append(f"- {name}: **{verdict}** ({detail})")
    return lines


#: what the zoo covers; docs/zoo.md records how it was tuned
SCOPE_NOTE = (
    "**Scope.** The zoo covers TaLoS sparse fine-tuning (paradigm `talos`), 8 tasks with a "
    "closely related pair, and a control set the pretraining knows well (docs/zoo.md records "
    "how it was tuned). A deeper or wider tower is not offered: it would not fit a 1 s "
    "evaluation and a 30 min build on a 2-core CPU."
)


def recipe_notes(root: str | Path) -> list[str]:
    """How the zoo was made, from its own ``tasks.json`` (no numbers typed by hand)."""
    info = json.loads((Path(root) / "tasks.json").read_text())
    b, data = info["build"], info["data_spec"]
    pre, talos = b["pretrain"], b["talos"]
    ft = ", ".join(
        f"{k} {v['steps']} steps of {v['batch_size']} lr {v['lr']:g}"
        for k, v in b["finetune"].items()
    )
    pair = {"digits", "printed_digits"} <= set(info["tasks"])
    return [
        f"**Model.** open_clip CLIP `{info['arch']}`: ViT image tower (width {b['width']}, "
        f"{b['layers']} layers, 7x7 patches on 28x28 images = 16 tokens), text transformer (width "
        f"{b['text_width']}, 2 layers) over a compact vocabulary of {len(info['vocabulary'])} BPE "
        f"ids. Weights stored as {b['dtype']}; theta_pre is rounded to {b['dtype']} before "
        "fine-tuning, so weights a paradigm does not train stay bit-identical (sparse task "
        "vectors are exactly sparse).",
        f"**Tasks.** {', '.join(info['tasks'])} (control: {info['control']}); splits "
        f"{data['sizes']} images per task"
        + (f" (control {data['control_sizes']})" if data.get("control_sizes") else "")
        + f", generated from seed {data['seed']} "
        "(`taskarith_core.zoo.data`)"
        + ("; digits and printed_digits are the closely related pair." if pair else "."),
        f"**Pretraining** (contrastive, both towers): {pre['steps']} steps, batch "
        f"{pre['batch_size']}, AdamW lr {pre['lr']:g}, wd {pre['weight_decay']:g}, cosine. "
        f"Mixture: {data['pretrain_per_task']} style-shifted images per concept family (other "
        "fonts with outlines and inverted colours, outlined shapes, coarser textures, squares "
        "instead of dots, thin arrows, other object shapes on black; no handwritten digits) plus "
        f"the control's train split and {data.get('pretrain_control', 0)} more control images "
        "drawn apart from its splits (the control plays ImageNet, which CLIP knows well); "
        "captions from templates that are not the evaluation "
        f"prompts, {data['caption_noise']:.0%} naming a wrong class. This is meant to "
        "keep zero-shot accuracy moderate.",
        f"**Fine-tuning** (frozen zero-shot heads, AdamW, cosine): {ft}. TaLoS: "
        f"sparsity k={talos['sparsity']}, {talos['rounds']} rounds of "
        f"{talos['batches_per_round']}x{talos['batch_size']} examples (the paper: 10x128), soft "
        f"mask {talos['soft']}, gradients masked (Eq. 8).",
        SCOPE_NOTE,
    ]


def write_card(
    root: str | Path,
    progress: Progress = no_progress,
    device: Any = "cpu",
    quick: bool = False,
    notes: list[str] | None = None,
    paradigms: Sequence[str] | None = None,
) -> dict:
    """Measure the card of the zoo at ``root``; write ``card.json`` and ``README.md`` there.

    Measuring a subset of ``paradigms`` updates those entries of an existing ``card.json``."""
    root = Path(root)
    path = root / "card.json"
    paradigms = zoo_paradigms(root) if paradigms is None else list(paradigms)
    previous = (
        json.loads(path.read_text())
        if path.is_file() and set(paradigms) != set(zoo_paradigms(root))
        else None
    )
    card = measure_card(root, device, progress, quick, paradigms, previous)
    build = root / "build_time.json"
    if build.is_file():
        card["build"] = json.loads(build.read_text())
    if notes is None:
        notes = (previous or {}).get("notes") or recipe_notes(root)
    card["notes"] = list(notes)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(card, indent=1, default=str))
    if "checks" in card:
        with atomic_path(root / "README.md") as tmp:
            tmp.write_text(card_markdown(card))
    return card
