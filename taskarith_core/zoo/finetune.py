"""Fine-tuning the image tower on one task with its frozen zero-shot head, in three paradigms.

``full`` trains every image-tower weight; ``attention`` only W_q, W_k, W_v (packed in
``in_proj_weight``) and W_o (the attention-only paper, ICLR 2025); ``talos`` multiplies gradients
by a calibrated mask (TaLoS Eq. 8). Weights outside the trained set are restored bit-for-bit
after every step, so the task vector of a sparse paradigm is exactly zero where it should be.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..keys import VISUAL_PREFIX, is_attention_weight
from ..progress import Progress, no_progress
from .arch import to_float
from .pretrain import cosine_lr

__all__ = ["FinetuneConfig", "classify", "finetune", "trainable_mask"]


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 300
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 30
    seed: int = 0


def classify(visual: nn.Module, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Logits of normalised image features against a head [C, D] that includes the logit scale."""
    return F.normalize(visual(images), dim=-1) @ head.T


def trainable_mask(visual: nn.Module, paradigm: str) -> dict[str, torch.Tensor] | None:
    """1 where a paradigm may change a weight (``visual.*`` keys); None for ``full``."""
    if paradigm == "full":
        return None
    if paradigm != "attention":
        raise ValueError(f"no fixed mask for paradigm {paradigm!r}")
    return {
        VISUAL_PREFIX + name: torch.full_like(p, float(is_attention_weight(name)))
        for name, p in visual.named_parameters()
    }


def finetune(
    visual: nn.Module,
    head: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: FinetuneConfig,
    mask: dict[str, torch.Tensor] | None = None,
    progress: Progress = no_progress,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Train ``visual`` in place with cross-entropy; ``mask`` (``visual.*`` keys) gates grads."""
    visual.to(device).train()
    head = head.to(device)
    params = dict(visual.named_parameters())
    gates = {n: mask[VISUAL_PREFIX + n].to(device) for n in params} if mask is not None else {}
    trained = [p for n, p in params.items() if not gates or bool(gates[n].any())]
    for n, p in params.items():
        p.requires_grad_(not gates or bool(gates[n].any()))
    start = {n: p.detach().clone() for n, p in params.items() if n in gates}
    opt = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    loss_value = float("nan")
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, config.steps, config.lr, config.warmup)
        idx = torch.randint(len(images), (config.batch_size,), generator=generator)
        x, y = to_float(images[idx]).to(device), labels[idx].to(device)
        loss = F.cross_entropy(classify(visual, x, head), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for n, gate in gates.items():
            if params[n].grad is not None:
                params[n].grad.mul_(gate)  # TaLoS Eq. 8: theta <- theta - lr * (c * grad)
        opt.step()
        with torch.no_grad():
            for n, gate in gates.items():
                params[n].copy_(torch.where(gate.bool(), params[n], start[n]))
        loss_value = loss.item()
        progress(step + 1, config.steps, f"loss {loss_value:.3f}")
    for p in params.values():
        p.requires_grad_(True)
    visual.eval()
    return {"final_loss": loss_value}
