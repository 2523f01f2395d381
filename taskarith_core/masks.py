"""STA masks (Eq. 13-17 and 20) as first-class outputs, and their per-tensor selection rates.

A mask is a ``dict[str, bool Tensor]`` with the keys of the task vector it selects from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from .errors import InputError
from .keys import block_index, tensor_kind
from .quantile import linear_quantile

__all__ = [
    "Mask",
    "flatten_masks",
    "minmax_normalise",
    "selection_rates",
    "sta_fusion_masks",
    "sta_fusion_masks_for_tensor",
    "sta_negation_mask",
    "sta_negation_mask_for_tensor",
    "unflatten_masks",
]

Mask = dict[str, torch.Tensor]


def minmax_normalise(importance: torch.Tensor) -> torch.Tensor:
    """Eq. 13: (I - min I) / (max I - min I) within one tensor.

    A constant tensor carries no ranking, so it normalises to all zeros: it never beats another
    task at an element, and its own negation quantile selects nothing from it (strict ``>``).
    """
    values = importance.float()
    low, high = values.min(), values.max()
    span = high - low
    if span <= 0 or not torch.isfinite(span):
        return torch.zeros_like(values)
    return (values - low) / span


def sta_fusion_masks_for_tensor(
    importances: Sequence[torch.Tensor], p: float
) -> list[torch.Tensor]:
    """Eq. 14-17 at every element: M_i = 1(I'_i > p-quantile of the N normalised values)."""
    stacked = torch.stack([minmax_normalise(imp) for imp in importances])
    threshold = linear_quantile(stacked, p, dim=0)
    return list(stacked > threshold.unsqueeze(0))


def sta_fusion_masks(importances: Sequence[Mapping[str, torch.Tensor]], p: float) -> list[Mask]:
    """Crossmasking masks for N tasks, one dict per task (keys of the first importance dict)."""
    if len(importances) < 2:
        raise InputError(f"STA fusion needs at least 2 tasks, got {len(importances)}")
    masks: list[Mask] = [{} for _ in importances]
    for key in importances[0]:
        for mask, tensor_mask in zip(
            masks, sta_fusion_masks_for_tensor([imp[key] for imp in importances], p)
        ):
            mask[key] = tensor_mask
    return masks


def sta_negation_mask_for_tensor(importance: torch.Tensor, p: float) -> torch.Tensor:
    """Eq. 20's mask: elements whose normalised importance exceeds the tensor's own p-quantile."""
    normalised = minmax_normalise(importance)
    return normalised > linear_quantile(normalised, p)


def sta_negation_mask(importance: Mapping[str, torch.Tensor], p: float) -> Mask:
    """Per-tensor forgetting mask of one task."""
    return {key: sta_negation_mask_for_tensor(value, p) for key, value in importance.items()}


def selection_rates(masks_by_task: Mapping[str, Mapping[str, torch.Tensor]]) -> pd.DataFrame:
    """One row per (task, tensor): how many entries the mask keeps (STA Fig. 4, TaLoS Fig. 4)."""
    rows = []
    for task, mask in masks_by_task.items():
        for key, values in mask.items():
            numel = values.numel()
            selected = int(values.bool().sum().item())
            rows.append(
                {
                    "task": task,
                    "tensor": key,
                    "block": block_index(key),
                    "kind": tensor_kind(key),
                    "numel": numel,
                    "selected": selected,
                    "rate": selected / numel if numel else 0.0,
                }
            )
    columns = ["task", "tensor", "block", "kind", "numel", "selected", "rate"]
    return pd.DataFrame(rows, columns=columns)


def flatten_masks(
    masks_by_task: Mapping[str, Mapping[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Several tasks' masks in one safetensors dict: key ``"<task>/<tensor>"``, uint8 values."""
    flat = {}
    for task, mask in masks_by_task.items():
        if "/" in task:
            raise InputError(f"task name {task!r} must not contain '/'; rename the file")
        for key, values in mask.items():
            flat[f"{task}/{key}"] = values.to(torch.uint8)
    return flat


def unflatten_masks(flat: Mapping[str, torch.Tensor]) -> dict[str, Mask]:
    """Inverse of :func:`flatten_masks` (values become bool)."""
    out: dict[str, Mask] = {}
    for name, values in flat.items():
        task, sep, key = name.partition("/")
        if not sep:
            raise InputError(f"mask entry {name!r} is not '<task>/<tensor>'; write it with `masks`")
        out.setdefault(task, {})[key] = values.bool()
    return out
