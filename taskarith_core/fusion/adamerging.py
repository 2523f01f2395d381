"""AdaMerging (Yang et al., ICLR 2024): merging coefficients learned on unlabeled test images.

theta = theta_pre + sum_t lambda_t tau_t (task-wise, Eq. 4) or, per layer l (each parameter
tensor), theta^l = theta^l_pre + sum_t lambda^l_t tau^l_t (layer-wise, Eq. 6). The coefficients
start at 0.3 and minimise the summed Shannon entropy of the merged model's predictions on each
task's unlabeled test images (Eq. 5), with Adam (lr 1e-3, betas 0.9/0.999); as in the authors'
code each step draws two shuffled batches of 16 images per task, the pretrained weights keep
coefficient 1 and every lambda is clamped to [0, 1]. TaLoS (Table 5) runs it on test images too.

The method needs a model forward, which the fusion package does not know: the caller passes an
:class:`Adaptation` (the images, each task's frozen head and a functional forward), built from a
model source by :func:`taskarith_core.models.adaptation.adaptation_for`. It holds every task
vector in memory (all of them enter each step), so it does not stream from files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..progress import Progress, no_progress
from ..taskvec import StateDict, is_editable
from .params import Param
from .spec import MethodSpec

__all__ = ["SPEC", "Adaptation", "adamerging_coefficients", "adamerging_merge", "entropy"]

#: the authors' code: two shuffled batches per task in each step
BATCHES_PER_STEP = 2


@dataclass(frozen=True)
class Adaptation:
    """What the coefficients adapt on: per fine-tuned model (same order), its task's unlabeled
    images [N, 3, H, W] and frozen head [C, D] (logits = normalise(features) @ head.T), and
    ``features(state, images)``, the image tower run with the weights ``state`` (differentiable)."""

    images: Sequence[torch.Tensor]
    heads: Sequence[torch.Tensor]
    features: Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]
    device: torch.device | str = "cpu"
    progress: Progress = no_progress


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of softmax(logits) over the rows (Eq. 5)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean(0)


def _check(adaptation: Adaptation | None, n_tasks: int) -> Adaptation:
    if adaptation is None:
        raise InputError(
            "adamerging learns its coefficients on unlabeled test images through the model: "
            "run it on a model source (the page, a run config, sweeps or reproduce), not on "
            "checkpoint files alone"
        )
    if len(adaptation.images) != n_tasks or len(adaptation.heads) != n_tasks:
        raise InputError(f"adamerging needs images and a head for each of the {n_tasks} tasks")
    for index, images in enumerate(adaptation.images):
        if len(images) == 0:
            raise InputError(f"task {index + 1} has no unlabeled images to adapt on")
    return adaptation


def _draw(images: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The first batches of a fresh shuffle of one task's images (a new data loader per step)."""
    picks = torch.randperm(len(images), generator=generator)[: BATCHES_PER_STEP * batch_size]
    return [images[batch] for batch in picks.split(batch_size)]


def _merged(pre, stacks, lams, layer_wise: bool) -> dict[str, torch.Tensor]:
    """theta_pre + sum_t lambda_t tau_t for every editable tensor (differentiable in lams)."""
    out = dict(pre)
    for index, (key, stack) in enumerate(stacks.items()):
        weights = lams[index] if layer_wise else lams
        out[key] = pre[key] + torch.tensordot(weights, stack, dims=1)
    return out


def adamerging_coefficients(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    adaptation: Adaptation,
    *,
    granularity: str = "task",
    steps: int = 500,
    lr: float = 1e-3,
    init: float = 0.3,
    batch_size: int = 16,
    seed: int = 0,
) -> torch.Tensor:
    """The learned lambda, clamped to [0, 1]: [tasks] (task-wise) or [tensors, tasks]."""
    device = torch.device(adaptation.device)
    pre = {k: v.to(device, torch.float32) for k, v in pretrained.items() if is_editable(v)}
    stacks = {
        k: torch.stack([ft[k].to(device, torch.float32) - v for ft in finetuned])
        for k, v in pre.items()
    }
    layer_wise = granularity == "layer"
    shape = (len(stacks), len(finetuned)) if layer_wise else (len(finetuned),)
    raw = torch.full(shape, float(init), device=device, requires_grad=True)
    optimiser = torch.optim.Adam([raw], lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    heads = [head.to(device).float() for head in adaptation.heads]
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        state = _merged(pre, stacks, raw.clamp(0.0, 1.0), layer_wise)
        batches = [_draw(images, batch_size, generator) for images in adaptation.images]
        # one forward for every task's batches: a small tower is bound by calls, not images
        features = adaptation.features(state, torch.cat([x for b in batches for x in b]).to(device))
        features = F.normalize(features.float(), dim=-1)
        loss, start = torch.zeros((), device=device), 0
        for task_batches, head in zip(batches, heads):
            for x in task_batches:
                loss = loss + entropy(features[start : start + len(x)] @ head.T)
                start += len(x)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        adaptation.progress(step + 1, steps, f"AdaMerging entropy {loss.item():.4f}")
    return raw.detach().clamp(0.0, 1.0).cpu()


def adamerging_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    granularity: str = "task",
    steps: int = 500,
    lr: float = 1e-3,
    init: float = 0.3,
    batch_size: int = 16,
    seed: int = 0,
    adaptation: Adaptation | None = None,
) -> StateDict:
    """theta = theta_pre + sum_t lambda_t tau_t with the coefficients AdaMerging learns."""
    adaptation = _check(adaptation, len(finetuned))
    lams = adamerging_coefficients(
        pretrained,
        finetuned,
        adaptation,
        granularity=granularity,
        steps=steps,
        lr=lr,
        init=init,
        batch_size=batch_size,
        seed=seed,
    )
    out: StateDict = {}
    editable = [key for key, value in pretrained.items() if is_editable(value)]
    for key, value in pretrained.items():
        if not is_editable(value):
            out[key] = value.clone()
            continue
        weights = lams[editable.index(key)] if granularity == "layer" else lams
        merged = value.to(torch.float32).clone()
        for weight, ft in zip(weights.tolist(), finetuned):
            merged += weight * (ft[key].to(torch.float32) - value.to(torch.float32))
        out[key] = merged.to(value.dtype)
    return out


SPEC = MethodSpec(
    adamerging_merge,
    (
        Param(
            "granularity",
            "choice",
            "task",
            "one coefficient per task, or one per task and layer (parameter tensor)",
            choices=("task", "layer"),
        ),
        Param("steps", "int", 500, "Adam steps on the entropy of the test predictions", low=1),
        Param("lr", "float", 1e-3, "Adam learning rate", low=0.0, low_open=True),
        Param(
            "init",
            "float",
            0.3,
            "starting value of every coefficient",
            symbol="λ₀",
            low=0.0,
            high=1.0,
        ),
        Param(
            "batch_size",
            "int",
            16,
            "unlabeled images per batch (two batches per task and step)",
            low=1,
        ),
        Param("seed", "int", 0, "seed of the image sampling", low=0),
    ),
    "AdaMerging: coefficients learned by entropy minimisation on unlabeled test images",
    "Yang et al., AdaMerging: Adaptive Model Merging for Multi-Task Learning (ICLR 2024), "
    "Eq. 4-6, as in the authors' code",
    "AdaMerging",
    needs="adaptation",
    streams="tensor",
)
