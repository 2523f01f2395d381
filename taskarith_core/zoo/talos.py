"""TaLoS mask calibration (Iurada et al., ICLR 2025, Algorithm 1 and Appendix A.2).

Scores are diagonal-Fisher values at theta_pre (Eq. 7): per example, the squared gradient of
log p(y|x) with y sampled from the model's own prediction, summed over examples. Over R rounds the
fraction of trainable weights shrinks exponentially to 1 - k; at each round the weights with the
highest scores among those still trainable are frozen (mask 0), the rest stay trainable (mask 1).
Frozen entries are soft-masked (their weight scaled by ``soft``, e.g. 0.01) during calibration and
left out of the ranking, which avoids layer collapse. Only linear, attention, layer-norm and
convolution tensors are maskable; embeddings and the final projection stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..keys import VISUAL_PREFIX
from ..models.importance import per_sample_grads
from ..progress import Progress, no_progress
from .arch import to_float

__all__ = ["TalosConfig", "calibrate_mask", "fisher_scores", "is_maskable"]

_FROZEN = ("class_embedding", "positional_embedding")


@dataclass(frozen=True)
class TalosConfig:
    sparsity: float = 0.9  #: k, the fraction of weights frozen
    rounds: int = 4  #: R
    batches_per_round: int = 2  #: the paper uses 10 batches of 128 per round; CPU budget
    batch_size: int = 64
    soft: float = 0.01  #: value of already-masked entries during calibration
    seed: int = 0


def is_maskable(name: str) -> bool:
    """Linear / attention / layer-norm / convolution tensors; not embeddings or ``proj``."""
    leaf = name.removeprefix(VISUAL_PREFIX)
    return leaf != "proj" and not leaf.endswith(_FROZEN)


def fisher_scores(
    visual: nn.Module,
    head: torch.Tensor,
    images: torch.Tensor,
    scale: dict[str, torch.Tensor] | None = None,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Sum over ``images`` (uint8) of per-example squared grads of log p(y_hat|x) (Eq. 7).

    ``scale`` multiplies the weights elementwise (the soft mask c of Algorithm 1: p_{c*theta}).
    Labels are drawn from the model's own softmax, batch by batch. Keys are ``visual.*`` names.
    """
    device = head.device
    params = {n: p.detach() for n, p in visual.named_parameters()}
    if scale is not None:
        params = {n: p * scale[VISUAL_PREFIX + n].to(device) for n, p in params.items()}
    scores = {n: torch.zeros_like(p) for n, p in params.items()}
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size]).to(device)
        with torch.no_grad():
            feats = functional_call(visual, params, (x,))
            probs = F.softmax(F.normalize(feats, dim=-1) @ head.T, dim=-1)
        y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        batch = per_sample_grads(visual, params, head, x, y, _log_prob, _squared)
        for n, value in batch.items():
            scores[n] += value
    return {VISUAL_PREFIX + n: s for n, s in scores.items()}


def _log_prob(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=-1).gather(0, y[None])[0]


def _squared(_name: str, grads: torch.Tensor) -> torch.Tensor:
    return grads.pow(2).sum(dim=0)


def _threshold_round(
    scores: dict[str, torch.Tensor], active: dict[str, torch.Tensor], keep: int
) -> dict[str, torch.Tensor]:
    """Keep the ``keep`` lowest-scoring active entries (globally); freeze the other active ones."""
    pool = torch.cat([scores[n][active[n]] for n in active])
    if keep >= pool.numel():
        return active
    threshold = torch.kthvalue(pool, max(keep, 1)).values
    return {n: active[n] & (scores[n] <= threshold) for n in active}


def calibrate_mask(
    visual: nn.Module,
    head: torch.Tensor,
    images: torch.Tensor,
    config: TalosConfig,
    progress: Progress = no_progress,
) -> dict[str, torch.Tensor]:
    """Binary mask (1 = trainable) over every ``visual.*`` parameter, from task images (uint8)."""
    params = {VISUAL_PREFIX + n: p for n, p in visual.named_parameters()}
    maskable = [n for n in params if is_maskable(n)]
    active = {n: torch.ones_like(params[n], dtype=torch.bool) for n in maskable}
    total = sum(params[n].numel() for n in maskable)
    generator = torch.Generator(device=head.device).manual_seed(config.seed)
    per_round = config.batches_per_round * config.batch_size
    for r in range(1, config.rounds + 1):
        density = (1.0 - config.sparsity) ** (r / config.rounds)  # exponential schedule
        scale = {n: torch.ones_like(p) for n, p in params.items()}
        for n in maskable:
            scale[n] = torch.where(active[n], 1.0, config.soft).to(params[n].dtype)
        picks = torch.randint(
            len(images),
            (per_round,),
            generator=torch.Generator().manual_seed(config.seed * 1000 + r),
        )
        scores = fisher_scores(visual, head, images[picks], scale, config.batch_size, generator)
        active = _threshold_round(scores, active, round(density * total))
        progress(r, config.rounds, f"talos round {r}: density {density:.3f}")
    return {
        n: (active[n].to(torch.uint8) if n in active else torch.zeros_like(p, dtype=torch.uint8))
        for n, p in params.items()
    }
