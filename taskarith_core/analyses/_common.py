"""Helpers every analysis shares: task resolution, content hashes for cache keys, the on-disk
result cache, layout checks between task vectors, and an image tower whose weights can be set to
``theta_pre + sum_i alpha_i tau_i`` in place (so a grid of edited models reuses one module).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..io import atomic_path
from ..keys import VISUAL_PREFIX

__all__ = [
    "CACHE_VERSION",
    "TowerMixer",
    "cache_key",
    "check_shared_pretrained",
    "head_logits",
    "load_cached_frame",
    "pretrained_digest",
    "resolve_device",
    "resolve_tasks",
    "save_cached_frame",
    "source_task_vectors",
    "state_digest",
    "task_importances",
]

#: Bump when an analysis changes what it computes, so stale cached results are never reused.
CACHE_VERSION = 1


def resolve_device(device: Any) -> torch.device:
    """``"auto"`` / ``"cpu"`` / ``"cuda:0"`` or a device -> torch.device (pick_device decides)."""
    from ..device import pick_device

    return device if isinstance(device, torch.device) else pick_device(str(device))


def resolve_tasks(source: Any, tasks: Sequence[str] | None, minimum: int = 1) -> list[str]:
    """The tasks an analysis runs on: all of the source's by default; unknown names are refused."""
    chosen = list(source.tasks) if not tasks else list(tasks)
    known = set(source.tasks) | ({source.control_task} if source.control_task else set())
    for name in chosen:
        if name not in known:
            raise InputError(
                f"unknown task {name!r} in model source {source.name!r}; "
                f"choose from {', '.join(source.tasks)}"
            )
    if len(set(chosen)) != len(chosen):
        raise InputError(f"task list {chosen} repeats a task; name each task once")
    if len(chosen) < minimum:
        raise InputError(f"this analysis needs at least {minimum} tasks, got {len(chosen)}")
    return chosen


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, dtypes, shapes, bytes): keys caches of edited
    vectors."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def pretrained_digest(source: Any) -> str:
    """Hash of the pretrained weights file, memoised per (path, size, mtime) for large files."""
    from ..models.cache import file_digest

    return file_digest(source.pretrained_path())


def cache_key(kind: str, fields: Mapping[str, Any]) -> str:
    """Stable key from everything that determines a result (JSON, sorted keys)."""
    payload = json.dumps({"kind": kind, "v": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from ..models.cache import cache_dir as default_cache_dir

    return Path(default_cache_dir())


def load_cached_frame(kind: str, key: str, cache_dir: str | Path | None) -> pd.DataFrame | None:
    """A cached result, or None; an unreadable cache entry is treated as absent."""
    path = _cache_root(cache_dir) / "analyses" / kind / f"{key}.csv"
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def save_cached_frame(frame: pd.DataFrame, kind: str, key: str, cache_dir: str | Path | None):
    """Write a result to the cache atomically; a read-only cache folder only costs a recompute."""
    folder = _cache_root(cache_dir) / "analyses" / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            return
        with atomic_path(folder / f"{key}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    except (OSError, InputError):
        return


def source_task_vectors(
    source: Any, tasks: Sequence[str], pretrained: Mapping[str, torch.Tensor] | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    """tau_t = theta_t - theta_pre for each task, over the floating-point tensors."""
    from ..taskvec import task_vector

    pre = pretrained if pretrained is not None else source.load_pretrained()
    return {task: task_vector(pre, source.load_finetuned(task)) for task in tasks}


#: A fine-tune moves the weights by a small fraction of their norm; two independently trained
#: models differ by about sqrt(2) times it. Above this ratio a vector is refused.
MAX_RELATIVE_NORM = 1.0


def _relative_norm(pretrained: Mapping[str, torch.Tensor], vector: Mapping[str, torch.Tensor]):
    num = sum(float(v.double().pow(2).sum()) for v in vector.values())
    den = sum(float(pretrained[k].double().pow(2).sum()) for k in vector)
    return (num / den) ** 0.5 if den > 0 else 0.0


def check_shared_pretrained(
    pretrained: Mapping[str, torch.Tensor],
    vectors: Mapping[str, Mapping[str, torch.Tensor]],
    recorded: Mapping[str, str | None] | None = None,
) -> None:
    """Refuse task vectors that cannot come from ``pretrained``: unknown keys, other shapes, a
    norm comparable to the weights themselves (a checkpoint trained from another initialisation),
    or a recorded pretrained hash (e.g. safetensors metadata) that differs between vectors."""
    for name, vector in vectors.items():
        _check_vector_layout(pretrained, name, vector)
        ratio = _relative_norm(pretrained, vector)
        if ratio > MAX_RELATIVE_NORM:
            raise InputError(
                f"task vector {name!r} is {ratio:.2f} times the norm of the pretrained weights; "
                "its checkpoint was not fine-tuned from this pretrained model; use checkpoints "
                "fine-tuned from the same pretrained model"
            )
    hashes = {n: h for n, h in (recorded or {}).items() if h}
    if len(set(hashes.values())) > 1:
        pairs = ", ".join(f"{n}: {h[:12]}" for n, h in hashes.items())
        raise InputError(
            f"task vectors record different pretrained models ({pairs}); combine only vectors "
            "fine-tuned from the same pretrained checkpoint"
        )


def _check_vector_layout(pretrained, name: str, vector: Mapping[str, torch.Tensor]) -> None:
    for key, tensor in vector.items():
        if key not in pretrained:
            raise InputError(
                f"task vector {name!r}: key {key!r} is not in the pretrained model; the "
                "vectors must come from fine-tuning the same pretrained model"
            )
        if tuple(tensor.shape) != tuple(pretrained[key].shape):
            raise InputError(
                f"task vector {name!r}: {key!r} has shape {tuple(tensor.shape)} but the "
                f"pretrained model has {tuple(pretrained[key].shape)}; use vectors of the "
                "same pretrained model"
            )


def head_logits(features: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Logits of a frozen zero-shot head: normalise(image embedding) @ head.T (Ilharco et al.)."""
    return F.normalize(features.float(), dim=-1) @ head.T


class TowerMixer:
    """An image tower whose weights are set in place to ``theta_pre + sum_i alpha_i tau_i``.

    Editing the live parameters avoids building or reloading a module per grid point; only the
    tensors some vector changes are rewritten."""

    def __init__(
        self,
        visual: nn.Module,
        pretrained: Mapping[str, torch.Tensor],
        vectors: Sequence[Mapping[str, torch.Tensor]],
    ) -> None:
        self.visual = visual
        live = dict(visual.named_parameters())
        live.update(dict(visual.named_buffers()))
        device = next(visual.parameters()).device
        self.targets: dict[str, torch.Tensor] = {}
        self.pre: dict[str, torch.Tensor] = {}
        self.vectors: list[dict[str, torch.Tensor]] = [{} for _ in vectors]
        for key, target in live.items():
            full = f"{VISUAL_PREFIX}{key}"
            moved = [v[full] for v in vectors if full in v and bool(v[full].any())]
            if full in pretrained:
                with torch.no_grad():
                    target.copy_(pretrained[full])
            if not moved:
                continue
            self.targets[full] = target
            self.pre[full] = pretrained[full].to(device, target.dtype)
            for slot, vector in zip(self.vectors, vectors):
                if full in vector:
                    slot[full] = vector[full].to(device, target.dtype)
        self._current: tuple[float, ...] | None = None

    @torch.no_grad()
    def set(self, coefficients: Sequence[float]) -> nn.Module:
        """Write ``theta_pre + sum_i c_i tau_i`` into the tower and return it."""
        coefs = tuple(float(c) for c in coefficients)
        if coefs == self._current:
            return self.visual
        for key, target in self.targets.items():
            target.copy_(self.pre[key])
            for coef, vector in zip(coefs, self.vectors):
                if coef != 0.0 and key in vector:
                    target.add_(vector[key], alpha=coef)
        self._current = coefs
        return self.visual


def task_importances(
    source: Any,
    tasks: Sequence[str],
    metric: str,
    *,
    samples: int = 32,
    seed: int = 0,
    device: Any = "cpu",
    pretrained: Mapping[str, torch.Tensor] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """One importance dict per task; model-based metrics go through the model engine's disk
    cache so a slider move never recomputes them."""
    from ..importance import IMPORTANCE_METRICS, compute_importance

    if metric not in IMPORTANCE_METRICS:
        raise InputError(
            f"unknown importance metric {metric!r}; choose one of {', '.join(IMPORTANCE_METRICS)}"
        )
    if samples < 1:
        raise InputError(f"Ns={samples} samples is too few; use at least 1 (the paper uses 32)")
    out = []
    if IMPORTANCE_METRICS[metric].needs_model:
        from ..models.importance import cached_importance

        for task in tasks:
            out.append(dict(cached_importance(source, task, metric, samples, seed, device)))
        return out
    pre = pretrained if pretrained is not None else source.load_pretrained()
    for task in tasks:
        ft = source.load_finetuned(task)
        out.append(
            compute_importance(
                metric, pre, ft, source=source, task=task, samples=samples, seed=seed, device=device
            )
        )
    return out
