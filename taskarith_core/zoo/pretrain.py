"""Contrastive (CLIP) pretraining of both towers on the captioned, style-shifted mixture.

Captions are class names under :data:`~taskarith_core.zoo.data.PRETRAIN_TEMPLATES` (not the
evaluation templates), a fixed fraction of them naming a wrong class of the same task (caption
noise). Together with the style shift of the images this keeps zero-shot accuracy moderate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..progress import Progress, no_progress
from .arch import CompactTokenizer, to_float
from .data import PRETRAIN_TEMPLATES, DataSpec, pretrain_mixture
from .tasks import TASKS

__all__ = ["PretrainConfig", "caption_table", "cosine_lr", "pretrain"]


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    seed: int = 0


def cosine_lr(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero (the schedule of Ilharco et al.'s fine-tuning)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * lr * (1 + math.cos(math.pi * progress))


def caption_table(tasks: list[str], tokenizer: CompactTokenizer) -> torch.Tensor:
    """Token ids [task, class, template, context] of every pretraining caption."""
    classes = max(len(TASKS[t].classnames) for t in tasks)
    table = torch.zeros(
        len(tasks), classes, len(PRETRAIN_TEMPLATES), tokenizer.context_length, dtype=torch.long
    )
    for i, task in enumerate(tasks):
        for j, name in enumerate(TASKS[task].classnames):
            table[i, j] = tokenizer([tpl.format(name) for tpl in PRETRAIN_TEMPLATES])
    return table


def _noisy_labels(owners, tasks, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    task_ids = np.array([tasks.index(t) for t, _ in owners])
    labels = np.array([label for _, label in owners])
    sizes = np.array([len(TASKS[t].classnames) for t in tasks])[task_ids]
    flip = rng.random(len(labels)) < noise
    wrong = (labels + rng.integers(1, sizes)) % sizes
    return task_ids, np.where(flip, wrong, labels)


def pretrain(
    model: nn.Module,
    data: DataSpec,
    tokenizer: CompactTokenizer,
    config: PretrainConfig,
    progress: Progress = no_progress,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Train ``model`` (an open_clip CLIP) in place with the symmetric CLIP loss; returns stats."""
    images, owners = pretrain_mixture(data)
    tasks = sorted({t for t, _ in owners})
    rng = np.random.default_rng(config.seed)
    task_ids, labels = _noisy_labels(owners, tasks, data.caption_noise, rng)
    table = caption_table(tasks, tokenizer)
    task_ids_t, labels_t = torch.from_numpy(task_ids), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_value = float("nan")
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, config.warmup)
        idx = torch.randint(len(images), (config.batch_size,), generator=generator)
        tpl = torch.randint(len(PRETRAIN_TEMPLATES), (config.batch_size,), generator=generator)
        text = table[task_ids_t[idx], labels_t[idx], tpl]
        img_f, txt_f, scale = model(to_float(images[idx]).to(device), text.to(device))[:3]
        logits = scale * img_f @ txt_f.T
        target = torch.arange(len(idx), device=device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loss_value = loss.item()
        progress(step + 1, config.steps, f"pretrain loss {loss_value:.3f}")
    model.eval()
    return {"final_loss": loss_value, "mixture_images": float(len(images))}
