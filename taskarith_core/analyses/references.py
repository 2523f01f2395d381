"""What a merge run is measured against, each mean with its 95% interval.

A merged model's mean accuracy alone says little: the references are zero-shot, fine-tuned, task
arithmetic on the same tasks with lambda chosen on validation, and, for methods that mask by an
importance metric, the same method with random importance of the same size (3 seeds: a metric is
worth its cost only if it beats this control). Every mean carries a paired-bootstrap interval over
the evaluated images, and the run is compared with each reference on the same images.

Gradio-free: the page and ``run --config`` call the same functions. Results are kept on disk under
the model files' content hashes, so a reference costs nothing after its first computation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from ..progress import Progress, no_progress
from ..runconfig import RunConfig, method_spec
from ..stats import bootstrap_mean, mean_over_seeds, paired_difference

__all__ = [
    "RANDOM_SEEDS",
    "RunReferences",
    "references_table",
    "run_references",
]

#: seeds of the random-importance control (mean and spread over them)
RANDOM_SEEDS = (0, 1, 2)
#: side inputs made from an importance metric: methods reading them get the random control
FROM_IMPORTANCE = ("importances", "masks")
#: what each reference is called where it is shown
LABELS = {
    "zeroshot": "zero-shot",
    "finetuned": "fine-tuned (each on its task)",
    "task_arithmetic": "task arithmetic, lambda chosen on val",
    "random": "same method, random importance (3 seeds)",
}

Correct = dict[str, Any]


@dataclass
class RunReferences:
    """Per-image correctness of a run and of its references on the same images."""

    tasks: list[str]
    finetuned: dict[str, float]  #: fine-tuned accuracy per task: weights of normalised means
    run: Correct
    references: dict[str, Correct]  #: name (see LABELS) -> correctness; random: mean of seeds
    notes: dict[str, str] = field(default_factory=dict)  #: e.g. the lambda chosen on val
    seed_means: list[float] = field(default_factory=list)  #: random control: mean per seed


def _flat(correct: Mapping[str, Correct]) -> dict[str, torch.Tensor]:
    return {
        f"{n}/{t}": torch.as_tensor(v).to(torch.uint8)
        for n, c in correct.items()
        for t, v in c.items()
    }


def _nested(flat: Mapping[str, torch.Tensor]) -> dict[str, Correct]:
    out: dict[str, Correct] = {}
    for key, value in flat.items():
        name, _, task = key.partition("/")
        out.setdefault(name, {})[task] = value.bool()
    return out


def _disk_cached(service: Any, kind: str, parts: dict, compute: Callable[[], dict]) -> dict:
    """``compute()`` (name -> task -> correctness) kept on disk under the source files' hashes;
    sources without files (tests' in-memory ones) are only kept in the service's memo."""
    from ..models.cache import cache_key, file_digest, load_cached_state, save_cached_state

    source = service.source
    try:
        files = {
            "pretrained": file_digest(source.pretrained_path()),
            "finetuned": {t: file_digest(source.finetuned_path(t)) for t in parts["tasks"]},
        }
    except (AttributeError, OSError, NotImplementedError):
        return compute()
    key = cache_key(kind=kind, source=source.name, **files, **parts)
    hit = load_cached_state(kind, key)
    if hit is not None:
        return _nested(hit)
    out = compute()
    save_cached_state(_flat(out), kind, key)
    return out


def _correct(service: Any, state: Mapping, tasks: list[str], split: str, cfg: RunConfig) -> Correct:
    from ..models.evaluation import correctness, evaluate_states

    frame = evaluate_states(
        service.source,
        {"m": dict(state)},
        tasks=tasks,
        split=split,
        device=service.device,
        max_samples=cfg.max_samples,
        keep_correct=True,
    )
    return correctness(frame)["m"]


def _task_arithmetic(service: Any, cfg: RunConfig, tasks: list[str], progress: Progress):
    """Task arithmetic on ``tasks`` at the lambda with the best mean normalised val accuracy."""
    from .sweeps import LAMBDA_GRID

    def compute() -> dict:
        fts = [service.finetuned(t) for t in tasks]
        ft_val = service.reference("val", cfg.max_samples).set_index("task")["finetuned"]
        best, best_score = 0, -1.0
        for index, lam in enumerate(LAMBDA_GRID):
            progress(index, len(LAMBDA_GRID), f"task arithmetic on val, lambda {lam}")
            hits = _correct(service, _ta_state(service, fts, lam), tasks, "val", cfg)
            score = sum(float(hits[t].float().mean()) / ft_val[t] for t in tasks) / len(tasks)
            if score > best_score:  # ties keep the smaller lambda
                best, best_score = index, score
        state = _ta_state(service, fts, LAMBDA_GRID[best])
        hits = _correct(service, state, tasks, cfg.split, cfg)
        chosen = torch.arange(len(LAMBDA_GRID)) == best  # one-hot: stored like correctness
        return {"task_arithmetic": hits, "lambda": {"chosen": chosen}}

    parts = {
        "tasks": tasks,
        "split": cfg.split,
        "max_samples": cfg.max_samples,
        "grid": LAMBDA_GRID,
    }
    found = _disk_cached(service, "reference-ta", parts, compute)
    return found["task_arithmetic"], LAMBDA_GRID[int(found["lambda"]["chosen"].int().argmax())]


def _ta_state(service: Any, fts: list, lam: float) -> dict:
    from ..fusion import merge

    return merge("task_arithmetic", service.pretrained(), fts, lam=lam)


def _random_control(service: Any, cfg: RunConfig, tasks: list[str], progress: Progress):
    """The run's method and settings with random importance, for each of :data:`RANDOM_SEEDS`."""

    def compute() -> dict:
        out = {}
        for seed in RANDOM_SEEDS:
            progress(seed, len(RANDOM_SEEDS), f"random-importance control, seed {seed}")
            other = dataclasses.replace(cfg, importance="random", seed=seed)
            out[f"seed{seed}"] = _correct(
                service, service.merged_state(other), tasks, cfg.split, cfg
            )
        return out

    parts = {
        "tasks": tasks,
        "split": cfg.split,
        "max_samples": cfg.max_samples,
        "method": cfg.method,
        "params": cfg.params,
        "seeds": list(RANDOM_SEEDS),
    }
    found = _disk_cached(service, "reference-random", parts, compute)
    return [found[f"seed{s}"] for s in RANDOM_SEEDS]


def run_references(service: Any, cfg: RunConfig, progress: Progress = no_progress) -> RunReferences:
    """The run's per-image correctness and its references' (computed once per source, tasks and
    settings; then from the service's memory or the disk cache)."""
    tasks = service.resolve_tasks(cfg.tasks)

    def compute() -> RunReferences:
        from ..models.evaluation import reference_correct

        refs = reference_correct(service.source, cfg.split, service.device, cfg.max_samples)
        ft = service.reference(cfg.split, cfg.max_samples).set_index("task")["finetuned"]
        run = _correct(service, service.merged_state(cfg, progress), tasks, cfg.split, cfg)
        references = {k: {t: refs[k][t] for t in tasks} for k in ("zeroshot", "finetuned")}
        ta, lam = _task_arithmetic(service, cfg, tasks, progress)
        references["task_arithmetic"] = ta
        notes = {"task_arithmetic": f"lambda {lam:g} chosen on val"}
        seed_means: list[float] = []
        if method_spec("merge", cfg.method).needs in FROM_IMPORTANCE:
            seeds = _random_control(service, cfg, tasks, progress)
            references["random"] = mean_over_seeds(seeds)
            seed_means = [_mean_accuracy(s) for s in seeds]
        return RunReferences(
            tasks, {t: float(ft[t]) for t in tasks}, run, references, notes, seed_means
        )

    return service.memo(("references",) + tuple(service.result_key(cfg)), compute)


def _mean_accuracy(correct: Correct) -> float:
    return sum(float(torch.as_tensor(v).float().mean()) for v in correct.values()) / len(correct)


def references_table(refs: RunReferences) -> pd.DataFrame:
    """One row per model (the run first): mean accuracy and mean normalised accuracy in percent
    with their 95% intervals, and the run minus that reference on the same images (normalised
    points, interval, verdict on "the run is better")."""
    weights = {t: 1.0 / refs.finetuned[t] for t in refs.tasks}
    rows = []
    for name, correct in [("run", refs.run), *refs.references.items()]:
        absolute = bootstrap_mean(correct)
        normalised = bootstrap_mean(correct, weights)
        row: dict[str, Any] = {
            "model": "this run" if name == "run" else LABELS[name],
            "mean": round(100 * absolute.mean, 2),
            "95% interval": absolute.ends(),
            "mean normalised": round(100 * normalised.mean, 2),
            "normalised 95% interval": normalised.ends(),
            "run minus it (normalised)": "",
            "verdict: run better?": "",
            "note": refs.notes.get(name, ""),
        }
        if name == "random" and refs.seed_means:
            spread = [100 * m for m in refs.seed_means]
            row["note"] = "per seed " + ", ".join(f"{m:.2f}" for m in spread)
        if name != "run":
            got = paired_difference(refs.run, correct, weights)
            row["run minus it (normalised)"] = got.difference.text()
            row["verdict: run better?"] = got.verdict
        rows.append(row)
    return pd.DataFrame(rows)
