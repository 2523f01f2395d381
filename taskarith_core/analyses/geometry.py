"""Task-vector and mask geometry: cosine similarity (attention-only paper Fig. 10), mask IoU
(TaLoS Fig. 11), per-layer selection rates (STA Fig. 4, TaLoS Fig. 4) and function localisation
(TaLoS Fig. 3).

Pairwise statistics are accumulated one tensor at a time as small N x N Gram matrices, so memory
stays at N times the largest tensor whatever the model size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from ..errors import InputError
from ..keys import block_index, tensor_kind
from ..progress import Progress, no_progress
from ..taskvec import add_scaled
from ._common import resolve_tasks, source_task_vectors, task_importances

__all__ = [
    "GROUPINGS",
    "localisation_matrix",
    "mask_iou",
    "ns_mask_iou",
    "pool_rates",
    "rates_table",
    "sta_masks",
    "talos_masks",
    "task_vector_cosine",
]


def _block_group(key: str) -> str:
    index = block_index(key)
    return f"block {index}" if index >= 0 else "outside blocks"


#: How tensors are pooled before a pairwise statistic: one group, per block, per kind.
GROUPINGS: dict[str, Callable[[str], str]] = {
    "whole": lambda _key: "all",
    "block": _block_group,
    "kind": tensor_kind,
}


def _grouping(by: str) -> Callable[[str], str]:
    if by not in GROUPINGS:
        raise InputError(f"unknown grouping {by!r}; use one of {', '.join(GROUPINGS)}")
    return GROUPINGS[by]


def _gram_by_group(
    states: Mapping[str, Mapping[str, torch.Tensor]], by: str, as_mask: bool = False
) -> dict[str, torch.Tensor]:
    """Per group, the N x N matrix of dot products between the states' flattened tensors."""
    group_of = _grouping(by)
    names = list(states)
    keys = sorted({k for s in states.values() for k in s}, key=lambda k: (block_index(k), k))
    grams: dict[str, torch.Tensor] = {}
    for key in keys:
        shape = next(s[key].shape for s in states.values() if key in s)
        rows = []
        for name in names:
            value = states[name].get(key)
            if value is None:
                rows.append(torch.zeros(shape, dtype=torch.float64).reshape(-1))
            else:
                rows.append((value.bool() if as_mask else value).double().reshape(-1))
        stacked = torch.stack(rows)
        group = group_of(key)
        product = stacked @ stacked.T
        grams[group] = grams[group] + product if group in grams else product
    return grams


def task_vector_cosine(
    vectors: Mapping[str, Mapping[str, torch.Tensor]], by: str = "whole"
) -> pd.DataFrame:
    """Cosine similarity between every pair of task vectors, whole or per block / per kind.
    A group where a vector is all zeros gives NaN (the angle is undefined)."""
    if len(vectors) < 2:
        raise InputError(f"cosine similarity needs at least 2 task vectors, got {len(vectors)}")
    names = list(vectors)
    rows = []
    for group, gram in _gram_by_group(vectors, by).items():
        norms = gram.diagonal().sqrt()
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                denom = float(norms[i] * norms[j])
                cos = float(gram[i, j]) / denom if denom > 0 else float("nan")
                rows.append((by, group, a, b, cos))
    return pd.DataFrame(rows, columns=["by", "group", "task_a", "task_b", "cosine"])


def mask_iou(masks: Mapping[str, Mapping[str, torch.Tensor]], by: str = "whole") -> pd.DataFrame:
    """Intersection over union of the kept entries of every pair of masks (TaLoS Fig. 11).
    Two empty masks have no union: IoU is NaN there."""
    if len(masks) < 2:
        raise InputError(f"mask IoU needs at least 2 masks, got {len(masks)}")
    names = list(masks)
    rows = []
    for group, gram in _gram_by_group(masks, by, as_mask=True).items():
        sizes = gram.diagonal()
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                inter = float(gram[i, j])
                union = float(sizes[i] + sizes[j]) - inter
                iou = inter / union if union > 0 else float("nan")
                rows.append((by, group, a, b, int(inter), int(union), iou))
    columns = ["by", "group", "task_a", "task_b", "intersection", "union", "iou"]
    return pd.DataFrame(rows, columns=columns)


def sta_masks(
    source: Any,
    tasks: Sequence[str] | None,
    metric: str,
    p: float,
    *,
    samples: int = 32,
    seed: int = 0,
    device: Any = "cpu",
) -> dict[str, dict[str, torch.Tensor]]:
    """STA crossmasking masks (Eq. 13-17) of the chosen tasks at quantile ``p``."""
    from ..masks import sta_fusion_masks

    if not 0.0 <= p <= 1.0:
        raise InputError(f"p={p} is outside [0, 1]; choose a quantile in [0, 1]")
    tasks = resolve_tasks(source, tasks, minimum=2)
    imps = task_importances(source, tasks, metric, samples=samples, seed=seed, device=device)
    return dict(zip(tasks, sta_fusion_masks(imps, p)))


def talos_masks(source: Any, tasks: Sequence[str] | None) -> dict[str, dict[str, torch.Tensor]]:
    """The gradient masks TaLoS fine-tuning used (1 = trainable), one per task."""
    tasks = resolve_tasks(source, tasks)
    out = {}
    for task in tasks:
        mask = source.talos_mask(task)
        if mask is None:
            raise InputError(
                f"model source {source.name!r} has no TaLoS mask for task {task!r}; "
                "use the talos paradigm or STA masks (--masks sta)"
            )
        out[task] = {k: v.bool() for k, v in mask.items()}
    return out


def rates_table(
    masks: Mapping[str, Mapping[str, torch.Tensor]],
    level: str = "block",
    importances: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> pd.DataFrame:
    """Selection (remaining) rate per task and layer, split by kind: ``level="tensor"`` keeps one
    row per tensor; ``"block"`` pools the tensors of a block and kind (rate = kept / total).
    With ``importances``, ``no_ranking`` counts the entries whose importance ranks nothing."""
    from ..masks import selection_rates

    if level not in ("tensor", "block"):
        raise InputError(f"unknown rate level {level!r}; use block or tensor")
    table = selection_rates(masks, importances)
    return table if level == "tensor" else pool_rates(table)


def pool_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per-tensor selection rates pooled per task, block and kind (rate = kept / total)."""
    counts = ["numel", "selected"] + (["no_ranking"] if "no_ranking" in table else [])
    pooled = table.groupby(["task", "block", "kind"], sort=False, as_index=False)[counts].sum()
    pooled["rate"] = pooled["selected"] / pooled["numel"].where(pooled["numel"] > 0)
    return pooled.fillna({"rate": 0.0})


def localisation_matrix(
    source: Any,
    tasks: Sequence[str] | None = None,
    *,
    vectors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    coefficient: float = 1.0,
    split: str = "test",
    max_samples: int | None = None,
    device: Any = "cpu",
    label: str = "",
    progress: Progress = no_progress,
) -> pd.DataFrame:
    """Accuracy of theta_pre + c tau_i on every task j (TaLoS Fig. 3), with the ratios to the
    fine-tuned accuracy on j (the normalised accuracy) and to the zero-shot accuracy on j
    (the paper's). ``vectors`` may be masked or sparse; by default the source's task vectors."""
    from ..models.evaluation import evaluate_states, reference_accuracies

    tasks = resolve_tasks(source, tasks)
    pre = source.load_pretrained()
    vectors = dict(vectors) if vectors is not None else source_task_vectors(source, tasks, pre)
    refs = reference_accuracies(source, split=split, device=device, max_samples=max_samples)
    refs = refs.set_index("task")
    frames = []
    for index, task in enumerate(tasks):
        if task not in vectors:
            raise InputError(f"no task vector given for task {task!r}; give one per task")
        state = add_scaled(pre, vectors[task], coefficient)
        frame = evaluate_states(
            source, {task: state}, tasks=tasks, split=split, device=device, max_samples=max_samples
        )
        frames.append(frame.rename(columns={"model": "edited_with", "task": "evaluated_on"}))
        progress(index + 1, len(tasks), task)
    out = pd.concat(frames, ignore_index=True)[["edited_with", "evaluated_on", "accuracy"]]
    out["finetuned"] = out["evaluated_on"].map(refs["finetuned"])
    out["zeroshot"] = out["evaluated_on"].map(refs["zeroshot"])
    out["ratio_finetuned"] = out["accuracy"] / out["finetuned"]
    out["ratio_zeroshot"] = out["accuracy"] / out["zeroshot"]
    return out.assign(label=label or source.name, coefficient=coefficient)


def ns_mask_iou(
    source: Any,
    metric: str = "lp",
    sample_counts: Sequence[int] = (8, 16, 32, 64),
    *,
    tasks: Sequence[str] | None = None,
    p: float = 0.7,
    seed: int = 0,
    device: Any = "cpu",
) -> pd.DataFrame:
    """IoU between the STA masks that each pair of sample counts Ns gives, per task and as the
    mean over tasks (``task="mean"``): how stable the importance ranking is against Ns."""
    from ..masks import sta_fusion_masks

    counts = sorted({int(n) for n in sample_counts})
    if not counts or counts[0] < 1:
        raise InputError(f"sample counts {list(sample_counts)} must be whole numbers >= 1")
    tasks = resolve_tasks(source, tasks, minimum=2)
    pre = source.load_pretrained()
    masks = {
        n: sta_fusion_masks(
            task_importances(
                source, tasks, metric, samples=n, seed=seed, device=device, pretrained=pre
            ),
            p,
        )
        for n in counts
    }
    rows = []
    for index, task in enumerate(tasks):
        pairs = mask_iou({str(n): masks[n][index] for n in counts})
        for row in pairs.itertuples():
            rows.append((task, int(row.task_a), int(row.task_b), row.iou))
    frame = pd.DataFrame(rows, columns=["task", "samples_a", "samples_b", "iou"])
    mean = frame.groupby(["samples_a", "samples_b"], as_index=False)["iou"].mean()
    frame = pd.concat([frame, mean.assign(task="mean")], ignore_index=True)
    return frame.assign(metric=metric, p=p)
