"""The zoo's paradigms beyond full / attention-only / TaLoS: linearised fine-tuning, L-LoRA, LoTA.

- ``linearized`` (Ortiz-Jimenez et al., 2023) trains the first-order Taylor expansion of the tower
  around theta_pre (:class:`~taskarith_core.models.linearized.LinearizedTower`); its checkpoints
  hold theta_pre + tau and are evaluated, alone or merged, in that linearised model.
- ``l-lora`` (Tang et al., 2024) linearises LoRA adapters on the attention projections (W_q, W_k,
  W_v, W_o). With B initialised to zero the expansion in (A, B) is f(x; theta_pre) +
  J (s B A_0) (the A direction is multiplied by B_0 = 0), so only B trains and the task vector is
  the rank-r matrix s B A_0 per projection, evaluated linearised like ``linearized``.
- ``lota`` (Panda et al., 2024): a short full calibration fine-tune, a mask of the largest
  changes |theta_cal - theta_pre| at the paper's sparsity, then a sparse fine-tune from theta_pre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..keys import VISUAL_PREFIX
from ..models.linearized import LinearizedTower, linearized_forward
from .arch import to_float
from .finetune import FinetuneConfig, classify, finetune
from .pretrain import cosine_lr
from .talos import is_maskable

__all__ = [
    "LoraConfig",
    "LotaConfig",
    "finetune_l_lora",
    "finetune_linearized",
    "finetune_lota",
    "lota_mask",
    "val_accuracy",
]


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 8  #: r of every adapter
    alpha: float = 16.0  #: scaling s = alpha / r, as PEFT's lora_alpha
    seed: int = 0  #: seed of the A_0 draw


@dataclass(frozen=True)
class LotaConfig:
    sparsity: float = 0.9  #: fraction of weights frozen by the lottery-ticket mask
    calibration_steps: int = 50  #: full fine-tuning steps that decide the mask


def finetune_linearized(visual: nn.Module, head, images, labels, config: FinetuneConfig, device):
    """Train the linearised model in place: ``visual`` ends holding theta_pre + tau."""
    finetune(LinearizedTower(visual), head, images, labels, config, device=device)


def _lora_targets(visual: nn.Module) -> dict[str, int]:
    """Attention projection weights -> number of stacked projections (3 for in_proj, 1 for W_o)."""
    out = {}
    for name, _ in visual.named_parameters():
        if name.endswith("attn.in_proj_weight"):
            out[name] = 3
        elif name.endswith("attn.out_proj.weight"):
            out[name] = 1
    return out


def lora_delta(bs: dict[str, torch.Tensor], as_: dict[str, torch.Tensor], scale: float):
    """Per target weight, the stacked s B_i A_i of its projections (rows of in_proj: q, k, v)."""
    return {n: scale * torch.cat([b @ a for b, a in zip(bs[n], as_[n])]) for n in bs}


def finetune_l_lora(visual, head, images, labels, config: FinetuneConfig, lora: LoraConfig, device):
    """Train linearised LoRA B matrices; write theta_pre + s B A_0 into ``visual``'s weights."""
    visual.to(device).eval()
    theta0 = {n: p.detach().clone() for n, p in visual.named_parameters()}
    gen = torch.Generator().manual_seed(lora.seed)
    as_, bs = {}, {}
    for name, parts in _lora_targets(visual).items():
        rows, cols = theta0[name].shape[0] // parts, theta0[name].shape[1]
        bound = 1.0 / math.sqrt(cols)  # PEFT's kaiming-uniform(a=sqrt(5)) bound for A
        as_[name] = [(torch.rand(lora.rank, cols, generator=gen) * 2 - 1).mul(bound).to(device)
                     for _ in range(parts)]  # fmt: skip
        bs[name] = [torch.zeros(rows, lora.rank, device=device, requires_grad=True)
                    for _ in range(parts)]  # fmt: skip
    scale = lora.alpha / lora.rank
    opt = torch.optim.AdamW([b for parts in bs.values() for b in parts], lr=config.lr,
                            weight_decay=0.0)  # fmt: skip
    generator = torch.Generator().manual_seed(config.seed)
    head = head.to(device)
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, config.warmup)
        idx = torch.randint(len(images), (config.batch_size,), generator=generator)
        x, y = to_float(images[idx]).to(device), labels[idx].to(device)
        delta = lora_delta(bs, as_, scale)
        theta = {n: theta0[n] + d for n, d in delta.items()}
        feats = linearized_forward(visual, theta0, theta, x)
        loss = F.cross_entropy(F.normalize(feats, dim=-1) @ head.T, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        params = dict(visual.named_parameters())
        for n, d in lora_delta(bs, as_, scale).items():
            params[n].copy_(theta0[n] + d)


def lota_mask(
    pre: dict[str, torch.Tensor], calibrated: dict[str, torch.Tensor], sparsity: float
) -> dict[str, torch.Tensor]:
    """1 on the (1 - sparsity) largest |calibrated - pre| entries of the maskable tensors (global
    ranking); 0 elsewhere and on every tensor that is not maskable. Keys ``visual.*``."""
    maskable = [n for n in pre if is_maskable(VISUAL_PREFIX + n)]
    moved = torch.cat([(calibrated[n] - pre[n]).abs().flatten() for n in maskable])
    keep = max(1, round((1.0 - sparsity) * moved.numel()))
    threshold = torch.topk(moved, keep).values[-1]
    out = {}
    for n, p in pre.items():
        if n in maskable:
            out[VISUAL_PREFIX + n] = ((calibrated[n] - p).abs() >= threshold).to(torch.uint8)
        else:
            out[VISUAL_PREFIX + n] = torch.zeros_like(p, dtype=torch.uint8)
    return out


def finetune_lota(visual, head, images, labels, config: FinetuneConfig, lota: LotaConfig, device):
    """Calibration fine-tune, lottery-ticket mask, sparse fine-tune from theta_pre; the mask."""
    pre = {n: p.detach().clone() for n, p in visual.named_parameters()}
    calib = FinetuneConfig(lota.calibration_steps, config.batch_size, config.lr,
                           max(1, config.warmup * lota.calibration_steps // config.steps),
                           config.seed + 1)  # fmt: skip
    finetune(visual, head, images, labels, calib, device=device)
    calibrated = {n: p.detach().clone() for n, p in visual.named_parameters()}
    mask = lota_mask(pre, calibrated, lota.sparsity)
    with torch.no_grad():
        for n, p in visual.named_parameters():
            p.copy_(pre[n])
    finetune(visual, head, images, labels, config, mask, device=device)
    return mask


@torch.no_grad()
def val_accuracy(visual: nn.Module, head, images, labels, device) -> float:
    """Accuracy on a validation split (uint8 images); pass a LinearizedTower for the linearised
    paradigms, so that they are chosen by the model they are evaluated as."""
    visual.eval()
    correct = 0
    for start in range(0, len(images), 512):
        x = to_float(images[start : start + 512]).to(device)
        logits = classify(visual, x, head.to(device))
        correct += int((logits.argmax(1).cpu() == labels[start : start + 512]).sum())
    return correct / max(1, len(images))
