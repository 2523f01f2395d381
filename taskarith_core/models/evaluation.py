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
from .cache import cache_key, file_digest, load_cached_frame, save_cached_frame
from .clip import load_visual_state
from .fast_forward import CPU_CHUNK, chunked, tower_forward
from .source import SPLITS

__all__ = [
    "add_normalised",
    "batched_logits",
    "clear_caches",
    "evaluate_states",
    "head_for",
    "reference_accuracies",
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
def _accuracy(forward: Any, batches: Any, head: torch.Tensor, device: torch.device) -> float:
    correct = seen = 0
    chunk = CPU_CHUNK if device.type == "cpu" else None
    for x, y in batches:
        features = chunked(forward, x.to(device, non_blocking=True), chunk)
        logits = F.normalize(features.float(), dim=-1) @ head.T
        correct += int((logits.argmax(dim=1).cpu() == y).sum())
        seen += len(y)
    return correct / seen if seen else float("nan")


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
) -> pd.DataFrame:
    """Accuracy of each image-tower state on each task: DataFrame[model, task, split, accuracy]."""
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
                rows.append((name, task, split, _accuracy(forward, batches, heads[task], device)))
                progress(i * len(tasks) + j + 1, total, f"{name} on {task}")
    return pd.DataFrame(rows, columns=["model", "task", "split", "accuracy"])


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
    tasks = list(source.tasks)
    zero = evaluate_states(
        source, {"zeroshot": source.load_pretrained()}, tasks, split, device, max_samples
    )
    finetuned = {}
    for i, task in enumerate(tasks):
        frame = evaluate_states(
            source, {task: source.load_finetuned(task)}, [task], split, device, max_samples
        )
        finetuned[task] = float(frame["accuracy"].iloc[0])
        progress(i + 1, len(tasks), f"fine-tuned {task}")
    out = pd.DataFrame(
        {
            "task": tasks,
            "zeroshot": zero["accuracy"].to_numpy(),
            "finetuned": [finetuned[t] for t in tasks],
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
