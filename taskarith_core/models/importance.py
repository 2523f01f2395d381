"""Model-based importance: STA's loss preservation (lp) and TaLoS's diagonal Fisher.

Both are pure functions of (source, task, state): Ns samples are drawn from the task's training
split with a seeded generator, the image tower runs functionally on ``state`` (never mutating the
source's modules), and per-sample gradients come from ``torch.func`` (``vmap`` over ``grad``) in
chunks sized so that one chunk of gradients stays under ~1 GB.

- lp (STA Eq. 10-12): I = sum_j |theta * dL(x_j, y_j)/dtheta|, L the cross-entropy with the true
  label, the absolute value taken per sample before summing.
- fisher (TaLoS Eq. 7): F = 1/N sum_i (d log p(y_i|x_i)/dtheta)^2, y_i sampled from the model's own
  prediction p(.|x_i) (one draw per example).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..device import pick_device
from ..errors import InputError
from ..keys import VISUAL_PREFIX
from .cache import cache_key, file_digest, load_cached_state, save_cached_state
from .clip import check_compatible
from .evaluation import split_tensors
from .files import read_visual_state

__all__ = [
    "MODEL_METRICS",
    "cached_importance",
    "fisher_importance",
    "lp_importance",
    "per_sample_grads",
]

#: metrics computed here (``lp_amp`` is lp x theta_t^2 on top of a cached lp)
MODEL_METRICS = ("lp", "fisher", "lp_amp")
_CHUNK_BYTES = 1 << 30

StateDict = dict[str, torch.Tensor]
SampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [C], y) -> scalar


def _device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(str(device))


def _check_samples(samples: int) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise InputError(f"Ns={samples} samples is too few; use at least 1 (the paper uses 32)")


def per_sample_grads(
    visual: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    head: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    sample_loss: SampleLoss,
    reduce: Callable[[str, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Sum over samples of ``reduce(name, grad of sample_loss for that sample)``.

    ``params`` are the tower's parameters without the ``visual.`` prefix, on the head's device;
    ``reduce`` maps a chunk of per-sample gradients [B, *shape] to [*shape]."""
    buffers = dict(visual.named_buffers())

    def loss(p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats = functional_call(visual, (p, buffers), (x[None],))
        logits = F.normalize(feats.float(), dim=-1)[0] @ head.T
        return sample_loss(logits, y)

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    numel = sum(v.numel() for v in params.values())
    chunk = max(1, min(len(images), _CHUNK_BYTES // max(4 * numel, 1)))
    total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}
    with warnings.catch_warnings():  # functorch's notice that fused attention has no batch rule
        warnings.filterwarnings("ignore", message="There is a performance drop")
        for start in range(0, len(images), chunk):
            x = images[start : start + chunk].to(head.device)
            y = targets[start : start + chunk].to(head.device)
            for name, g in per_sample(dict(params), x, y).items():
                total[name] += reduce(name, g.float())
    return total


def _tower_params(
    source: Any, state: Mapping[str, torch.Tensor], device: torch.device
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A fresh tower of the source's architecture and ``state`` as its functional parameters."""
    visual = source.build_visual(device)
    names = {f"{VISUAL_PREFIX}{n}": p.shape for n, p in visual.named_parameters()}
    check_compatible(names, state, "importance state")
    params = {k[len(VISUAL_PREFIX) :]: v.detach().float().to(device) for k, v in state.items()}
    return visual, params


def _with_prefix(
    values: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> StateDict:
    """Results on CPU, keyed and ordered like ``state``."""
    return {k: values[k[len(VISUAL_PREFIX) :]].cpu() for k in state}


def lp_importance(
    source: Any,
    task: str,
    state: Mapping[str, torch.Tensor],
    *,
    samples: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> StateDict:
    """STA Eq. 12 on ``state`` (theta_t): sum over Ns training samples of |theta * dL/dtheta|."""
    _check_samples(samples)
    device = _device(device)
    images, labels = split_tensors(source, task, "train", max_samples=samples, seed=seed)
    visual, params = _tower_params(source, state, device)
    head = source.head(task, device).float().to(device)

    def reduce(name: str, g: torch.Tensor) -> torch.Tensor:
        return (params[name] * g).abs().sum(dim=0)

    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[None], y[None])

    values = per_sample_grads(visual, params, head, images, labels, ce, reduce)
    return _with_prefix(values, state)


@torch.no_grad()
def _sample_own_labels(
    visual: torch.nn.Module,
    params: Mapping[str, torch.Tensor],
    head: torch.Tensor,
    images: torch.Tensor,
    seed: int,
) -> torch.Tensor:
    """One label per image drawn from the model's softmax (CPU generator: same on every device)."""
    feats = functional_call(visual, dict(params), (images.to(head.device),))
    probs = F.softmax(F.normalize(feats.float(), dim=-1) @ head.T, dim=-1).cpu().double()
    return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)


def fisher_importance(
    source: Any,
    task: str,
    state: Mapping[str, torch.Tensor],
    *,
    samples: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    mask: Mapping[str, torch.Tensor] | None = None,
) -> StateDict:
    """TaLoS Eq. 7 at ``state`` (theta_pre): mean over Ns training images of the squared gradient
    of log p(y|x), y drawn from the model's own prediction.

    ``mask`` multiplies the weights before scoring (TaLoS calibration passes its soft mask, 1 for
    trainable entries and e.g. 0.01 for frozen ones); gradients are taken w.r.t. the masked weights.
    """
    _check_samples(samples)
    device = _device(device)
    images, _ = split_tensors(source, task, "train", max_samples=samples, seed=seed)
    visual, params = _tower_params(source, state, device)
    if mask is not None:
        for name in params:
            factor = mask.get(f"{VISUAL_PREFIX}{name}")
            if factor is not None:
                params[name] = params[name] * factor.to(device, torch.float32)
    head = source.head(task, device).float().to(device)
    own = _sample_own_labels(visual, params, head, images, seed)

    def log_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits, dim=-1).gather(0, y[None])[0]

    def reduce(name: str, g: torch.Tensor) -> torch.Tensor:
        return g.pow(2).sum(dim=0) / len(images)

    values = per_sample_grads(visual, params, head, images, own, log_prob, reduce)
    return _with_prefix(values, state)


def _scored_state(
    source: Any, task: str, metric: str, model_path: Path | None, trust_pickle: bool
) -> StateDict:
    if model_path is not None:
        return read_visual_state(model_path, trust_pickle)
    return source.load_pretrained() if metric == "fisher" else source.load_finetuned(task)


def cached_importance(
    source: Any,
    task: str,
    metric: str,
    samples: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
    model_path: str | Path | None = None,
    trust_pickle: bool = False,
) -> StateDict:
    """``lp`` / ``lp_amp`` on theta_t or ``fisher`` on theta_pre, through the disk cache.

    ``model_path`` scores another checkpoint of the same architecture instead (the CLI's
    ``--model``). Key: sha256 of the scored file and of the pretrained file (whose text tower made
    the head) + metric + Ns + seed + task + source name."""
    if metric not in MODEL_METRICS:
        raise InputError(f"metric {metric!r} is not model-based; use one of {list(MODEL_METRICS)}")
    _check_samples(samples)
    source.classnames(task)  # unknown task -> InputError before any work
    path = None if model_path is None else Path(model_path)
    if metric == "lp_amp":
        lp = cached_importance(
            source, task, "lp", samples, seed, device, cache_dir, path, trust_pickle
        )
        theta = _scored_state(source, task, "lp", path, trust_pickle)
        return {k: v * theta[k].float() ** 2 for k, v in lp.items()}
    if path is None:
        path = source.pretrained_path() if metric == "fisher" else source.finetuned_path(task)
    key = cache_key(
        kind="importance",
        metric=metric,
        samples=samples,
        seed=seed,
        task=task,
        source=source.name,
        model=file_digest(path),
        pretrained=file_digest(source.pretrained_path()),
    )
    hit = load_cached_state("importance", key, cache_dir)
    if hit is not None:
        return hit
    state = _scored_state(source, task, metric, path, trust_pickle)
    compute = lp_importance if metric == "lp" else fisher_importance
    value = compute(source, task, state, samples=samples, seed=seed, device=device)
    meta = {"metric": metric, "task": task, "samples": str(samples), "seed": str(seed)}
    save_cached_state(value, "importance", key, cache_dir, meta)
    return value
