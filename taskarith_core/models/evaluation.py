"""Accuracy of edited image towers on each task's frozen zero-shot head.

Speed matters here: the page evaluates an edited model on every task after each click, and sweeps do
it hundreds of times. So per source we build one image tower per device and copy each state into it,
load each task's images once into memory, batch large, run the tower through the functional forward
of :mod:`.fast_forward` (the module forward for towers it does not support), and run without
autograd (``no_grad``, not ``inference_mode``, whose tensors would break callers that later
differentiate).
Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from ..device import pick_device
from ..errors import InputError
from ..progress import Progress, no_progress
from .cache import (
    cache_key,
    file_digest,
    load_cached_frame,
    load_cached_state,
    save_cached_frame,
    save_cached_state,
)
from .clip import load_visual_state
from .fast_forward import CPU_CHUNK, chunked, tower_forward
from .source import SPLITS

__all__ = [
    "add_normalised",
    "batched_logits",
    "clear_caches",
    "correctness",
    "evaluate_states",
    "head_for",
    "reference_accuracies",
    "reference_correct",
    "shared_visual",
    "split_tensors",
    "task_batches",
    "tower_lock",
]


@dataclass
class _SourceCache:
    data: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    visuals: dict[str, nn.Module] = field(default_factory=dict)
    heads: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    references: dict[tuple, pd.DataFrame] = field(default_factory=dict)
    correct: dict[tuple, dict[str, dict[str, torch.Tensor]]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


_CACHES: weakref.WeakKeyDictionary[Any, _SourceCache] = weakref.WeakKeyDictionary()
_STRONG: dict[int, tuple[Any, _SourceCache]] = {}  # sources that cannot be weakly referenced


def _cache(source: Any) -> _SourceCache:
    try:
        return _CACHES.setdefault(source, _SourceCache())
    except TypeError:
        entry = _STRONG.setdefault(id(source), (source, _SourceCache()))
        return entry[1]


def clear_caches() -> None:
    """Forget cached data, towers, heads and reference accuracies (e.g. after files changed)."""
    _CACHES.clear()
    _STRONG.clear()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {list(SPLITS)}")


def _stack(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    images, labels = [], []
    for x, y in DataLoader(dataset, batch_size=256, shuffle=False, num_workers=0):
        images.append(x)
        labels.append(torch.as_tensor(y))
    if not images:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(images), torch.cat(labels)


def _select(dataset: Any, task: str, split: str, max_samples: int | None, seed: int) -> Any:
    """A seeded random subset (kept in data order) of at most ``max_samples`` items."""
    n = len(dataset)
    if max_samples is not None and max_samples < n:
        gen = torch.Generator().manual_seed(seed)
        picks = torch.randperm(n, generator=gen)[:max_samples].sort().values
        if isinstance(dataset, TensorDataset):
            return TensorDataset(*(t[picks] for t in dataset.tensors))
        return Subset(dataset, picks.tolist())
    if max_samples is not None and max_samples > n:
        warnings.warn(
            f"task {task!r} {split} split has {n} samples, fewer than max_samples={max_samples}; "
            "using all of them",
            stacklevel=3,
        )
    return dataset


def _check_max(max_samples: int | None) -> None:
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples={max_samples}: give a positive number of samples")


def split_tensors(
    source: Any, task: str, split: str = "test", max_samples: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(float images [N, 3, H, W], int64 labels [N]) of a task's split, cached per source.

    ``max_samples`` picks a seeded random subset (kept in data order); asking for more samples than
    the split holds returns the whole split with a warning."""
    _check_split(split)
    _check_max(max_samples)
    cache = _cache(source)
    key = (task, split, max_samples, seed)
    if key not in cache.data:
        dataset = _select(source.dataset(task, split), task, split, max_samples, seed)
        images, labels = _stack(dataset)
        cache.data[key] = (images.float().contiguous(), labels.long().contiguous())
    return cache.data[key]


def _memory_budget() -> int:
    """Bytes of images one split may keep in memory (``$TASKARITH_DATA_CACHE_MB``, 2048)."""
    return int(float(os.environ.get("TASKARITH_DATA_CACHE_MB", "2048")) * (1 << 20))


def task_batches(
    source: Any,
    task: str,
    split: str = "test",
    max_samples: int | None = None,
    batch_size: int = 512,
    seed: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches of a split: from memory when the split fits the budget (cached
    for the next call), streamed through a DataLoader when it does not (e.g. SUN397 at 224 px)."""
    _check_split(split)
    _check_max(max_samples)
    cache = _cache(source)
    key = (task, split, max_samples, seed)
    if key not in cache.data:
        dataset = _select(source.dataset(task, split), task, split, max_samples, seed)
        item = dataset[0][0] if len(dataset) else torch.empty(0)
        if len(dataset) * torch.as_tensor(item).numel() * 4 > _memory_budget():
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
            for x, y in loader:
                yield x.float(), torch.as_tensor(y).long()
            return
        images, labels = _stack(dataset)
        cache.data[key] = (images.float().contiguous(), labels.long().contiguous())
    images, labels = cache.data[key]
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


def shared_visual(source: Any, device: torch.device | str = "cpu") -> nn.Module:
    """The one image tower per (source, device) that evaluations load states into (under
    :func:`tower_lock`)."""
    cache = _cache(source)
    key = str(torch.device(device))
    if key not in cache.visuals:
        cache.visuals[key] = source.build_visual(device).eval()
    return cache.visuals[key]


def tower_lock(source: Any) -> threading.RLock:
    """Hold this while loading states into :func:`shared_visual` and running it: page callbacks
    run in threads, and two of them editing the one tower at once would mix their weights."""
    return _cache(source).lock


def head_for(source: Any, task: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """A task's frozen head on ``device``, fetched from the source once."""
    cache = _cache(source)
    key = (task, str(torch.device(device)))
    if key not in cache.heads:
        cache.heads[key] = source.head(task, device).float().to(device)
    return cache.heads[key]


@torch.no_grad()
def batched_logits(
    visual: nn.Module,
    images: torch.Tensor,
    head: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Logits [N, C] = normalise(visual(x)) @ head.T, computed in batches on ``device`` (with the
    functional forward of :mod:`.fast_forward` when it supports the tower)."""
    device = torch.device(device) if device is not None else head.device
    head = head.to(device)
    forward = tower_forward(visual)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True)
        out.append(F.normalize(forward(x).float(), dim=-1) @ head.T)
    if not out:
        return torch.empty(0, head.shape[0], device=device)
    return torch.cat(out)


@torch.no_grad()
def _correct(forward: Any, batches: Any, head: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Per-image correctness (bool [N], in data order): accuracy is its mean, and two runs on the
    same images can be compared image by image (:mod:`taskarith_core.stats`)."""
    out = []
    chunk = CPU_CHUNK if device.type == "cpu" else None
    for x, y in batches:
        features = chunked(forward, x.to(device, non_blocking=True), chunk)
        logits = F.normalize(features.float(), dim=-1) @ head.T
        out.append(logits.argmax(dim=1).cpu() == y)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.bool)


def _fraction(correct: torch.Tensor) -> float:
    return int(correct.sum()) / len(correct) if len(correct) else float("nan")


def _resolve_tasks(source: Any, tasks: Sequence[str] | None) -> list[str]:
    if tasks is None:
        return list(source.tasks)
    known = list(source.tasks) + ([source.control_task] if source.control_task else [])
    for task in tasks:
        if task not in known:
            raise InputError(f"unknown task {task!r} in {source.name}; choose one of {known}")
    return list(tasks)


def evaluate_states(
    source: Any,
    states: Mapping[str, Mapping[str, torch.Tensor]],
    tasks: Sequence[str] | None = None,
    split: str = "test",
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    progress: Progress = no_progress,
    batch_size: int = 1024,
    keep_correct: bool = False,
) -> pd.DataFrame:
    """Accuracy of each image-tower state on each task: DataFrame[model, task, split, accuracy].

    ``keep_correct`` adds a ``correct`` column holding each row's per-image correctness (bool
    tensor [N]) for intervals and paired comparisons; :func:`correctness` reads it back."""
    device = pick_device(str(device)) if not isinstance(device, torch.device) else device
    _check_split(split)
    _check_max(max_samples)
    tasks = _resolve_tasks(source, tasks)
    heads = {t: head_for(source, t, device) for t in tasks}
    visual = shared_visual(source, device)
    rows, total = [], len(states) * len(tasks)
    with tower_lock(source):  # one tower per source: concurrent page callbacks take turns
        for i, (name, state) in enumerate(states.items()):
            forward = tower_forward(load_visual_state(visual, state))
            for j, task in enumerate(tasks):
                batches = task_batches(source, task, split, max_samples, batch_size)
                hits = _correct(forward, batches, heads[task], device)
                rows.append((name, task, split, _fraction(hits), hits))
                progress(i * len(tasks) + j + 1, total, f"{name} on {task}")
    frame = pd.DataFrame(rows, columns=["model", "task", "split", "accuracy", "correct"])
    return frame if keep_correct else frame.drop(columns="correct")


def correctness(frame: pd.DataFrame) -> dict[str, dict[str, torch.Tensor]]:
    """model -> task -> per-image correctness, from ``evaluate_states(..., keep_correct=True)``."""
    if "correct" not in frame:
        raise InputError("this table has no per-image correctness; evaluate with keep_correct=True")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for model, task, hits in zip(frame["model"], frame["task"], frame["correct"]):
        out.setdefault(model, {})[task] = hits
    return out


def _reference_key(source: Any, split: str, max_samples: int | None) -> str:
    """Everything the reference table depends on that can be read without loading the data."""
    return cache_key(
        kind="reference",
        source=source.name,
        arch=source.arch,
        split=split,
        max_samples=max_samples,
        pretrained=file_digest(source.pretrained_path()),
        finetuned={t: file_digest(source.finetuned_path(t)) for t in source.tasks},
        classnames={t: source.classnames(t) for t in source.tasks},
    )


def _flat(refs: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {
        f"{kind}/{task}": v.to(torch.uint8) for kind, by in refs.items() for task, v in by.items()
    }


def _nested(flat: Mapping[str, torch.Tensor], tasks: list[str]) -> dict | None:
    names = [(kind, t) for kind in ("zeroshot", "finetuned") for t in tasks]
    if any(f"{kind}/{t}" not in flat for kind, t in names):
        return None
    return {
        kind: {t: flat[f"{kind}/{t}"].bool() for t in tasks} for kind in ("zeroshot", "finetuned")
    }


def reference_correct(
    source: Any,
    split: str = "test",
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    progress: Progress = no_progress,
    cache_dir: str | Path | None = None,
    use_disk: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image correctness of the references: {"zeroshot" | "finetuned": {task: bool [N]}}
    (fine-tuned: theta_t on its own task). Cached in memory per source and on disk under the
    files' content hashes, so intervals of the references cost nothing after the first time."""
    cache = _cache(source)
    key = (split, max_samples)
    if key in cache.correct:
        return cache.correct[key]
    tasks = list(source.tasks)
    disk_key = _reference_key(source, split, max_samples) if use_disk else None
    hit = load_cached_state("reference-correct", disk_key, cache_dir) if disk_key else None
    refs = _nested(hit, tasks) if hit is not None else None
    if refs is None:
        pre = {"zeroshot": source.load_pretrained()}
        zero = evaluate_states(source, pre, tasks, split, device, max_samples, keep_correct=True)
        refs = {"zeroshot": correctness(zero)["zeroshot"], "finetuned": {}}
        for i, task in enumerate(tasks):
            own = {task: source.load_finetuned(task)}
            frame = evaluate_states(
                source, own, [task], split, device, max_samples, keep_correct=True
            )
            refs["finetuned"][task] = frame["correct"].iloc[0]
            progress(i + 1, len(tasks), f"fine-tuned {task}")
        if disk_key:
            save_cached_state(_flat(refs), "reference-correct", disk_key, cache_dir)
    cache.correct[key] = refs
    return refs


def reference_accuracies(
    source: Any,
    split: str = "test",
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    progress: Progress = no_progress,
    cache_dir: str | Path | None = None,
    use_disk: bool = True,
) -> pd.DataFrame:
    """Per task (not the control set): zero-shot (theta_pre) and fine-tuned (theta_t on its own
    task) accuracy. Cached in memory per source and on disk under the files' content hashes
    (``use_disk=False`` skips the disk)."""
    cache = _cache(source)
    key = (split, max_samples)
    if key in cache.references:
        return cache.references[key].copy()
    disk_key = _reference_key(source, split, max_samples) if use_disk else None
    hit = load_cached_frame("reference", disk_key, cache_dir) if disk_key else None
    if hit is not None and list(hit.columns) == ["task", "zeroshot", "finetuned"]:
        cache.references[key] = hit
        return hit.copy()
    refs = reference_correct(source, split, device, max_samples, progress, cache_dir, use_disk)
    tasks = list(source.tasks)
    out = pd.DataFrame(
        {
            "task": tasks,
            "zeroshot": [_fraction(refs["zeroshot"][t]) for t in tasks],
            "finetuned": [_fraction(refs["finetuned"][t]) for t in tasks],
        }
    )
    cache.references[key] = out
    if disk_key:
        save_cached_frame(out, "reference", disk_key, cache_dir)
    return out.copy()


def add_normalised(df: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Add ``normalised`` = accuracy / fine-tuned accuracy of the same task (Ilharco et al.)."""
    ref = reference.set_index("task")["finetuned"]
    out = df.copy()
    out["normalised"] = out["accuracy"] / out["task"].map(ref).astype(float)
    return out
