"""Kernel-behaviour test (attention-only paper Section 3.2 / Fig. 3; TaLoS Appendix A.4).

Post-hoc linearisation of a fine-tuned image tower around theta_pre:
f_lin(x; theta_t) = f(x; theta_pre) + J(x) (theta_t - theta_pre), one ``torch.func.jvp`` per
batch (the Jacobian is never formed). The frozen zero-shot head is applied to both embeddings.
A small accuracy gap between the non-linear and the linearised model means fine-tuning stayed
in the kernel regime.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import InputError
from ..keys import VISUAL_PREFIX
from ..progress import Progress, no_progress
from ._common import (
    check_shared_pretrained,
    head_logits,
    resolve_device,
    resolve_tasks,
    source_task_vectors,
)

__all__ = ["kernel_test", "linearised_logits", "slow_attention_path"]


@contextlib.contextmanager
def slow_attention_path(visual: nn.Module) -> Iterator[None]:
    """Route attention through composite ops that forward-mode AD supports (the fused eval-mode
    MultiheadAttention kernel and the flash SDPA kernel do not). Only modules with dropout 0 are
    switched, so the computed function is unchanged."""
    switched = [
        m
        for m in visual.modules()
        if isinstance(m, nn.MultiheadAttention) and not m.training and m.dropout == 0.0
    ]
    for module in switched:
        module.training = True
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for module in switched:
            module.training = False


def _param_dicts(
    visual: nn.Module, pretrained: Mapping[str, torch.Tensor], vector: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Primal (theta_pre) and tangent (tau, zero where the vector has no entry) per parameter."""
    primal, tangent = {}, {}
    for name, param in visual.named_parameters():
        full = f"{VISUAL_PREFIX}{name}"
        base = pretrained[full] if full in pretrained else param.detach()
        primal[name] = base.to(param.device, param.dtype)
        if full in vector:
            tangent[name] = vector[full].to(param.device, param.dtype)
        else:
            tangent[name] = torch.zeros_like(primal[name])
    return primal, tangent


def linearised_logits(
    visual: nn.Module,
    pretrained: Mapping[str, torch.Tensor],
    vector: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    head: torch.Tensor,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits at theta_pre, at theta_pre + tau (non-linear) and of the linearisation."""
    primal, tangent = _param_dicts(visual, pretrained, vector)
    edited = {name: primal[name] + tangent[name] for name in primal}
    device = next(visual.parameters()).device
    zeroshot, nonlinear, linear = [], [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)

        def embed(params: dict[str, torch.Tensor], x: torch.Tensor = batch) -> torch.Tensor:
            return functional_call(visual, params, (x,))

        with torch.no_grad(), slow_attention_path(visual):
            base, direction = jvp(embed, (primal,), (tangent,))
            zeroshot.append(head_logits(base, head).cpu())
            linear.append(head_logits(base + direction, head).cpu())
            nonlinear.append(head_logits(embed(edited), head).cpu())
    return torch.cat(zeroshot), torch.cat(nonlinear), torch.cat(linear)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == labels.to(logits.device)).float().mean())


def kernel_test(
    source: Any,
    tasks: Sequence[str] | None = None,
    *,
    vectors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    split: str = "test",
    samples: int | None = 512,
    seed: int = 0,
    device: Any = "cpu",
    label: str = "",
    batch_size: int = 256,
    progress: Progress = no_progress,
) -> pd.DataFrame:
    """Per task: zero-shot, non-linear fine-tuned and post-hoc linearised accuracy, and the gap
    (non-linear minus linearised, in accuracy points on [0, 1])."""
    from ..models.evaluation import split_tensors

    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise InputError(f"samples={samples}: give a positive number of samples per task")
    tasks = resolve_tasks(source, tasks)
    device = resolve_device(device)
    pre = source.load_pretrained()
    vectors = dict(vectors) if vectors is not None else source_task_vectors(source, tasks, pre)
    missing = [t for t in tasks if t not in vectors]
    if missing:
        raise InputError(f"no task vector given for task {missing[0]!r}; give one per task")
    check_shared_pretrained(pre, {t: vectors[t] for t in tasks})
    visual = source.build_visual(device)
    # a linearised source's tower is its Taylor expansion: the test compares the plain tower
    # with its own linearisation, so it runs on the plain tower inside
    visual = getattr(visual, "inner", visual)
    for param in visual.parameters():
        param.requires_grad_(False)
    rows = []
    for index, task in enumerate(tasks):
        images, labels = split_tensors(source, task, split, max_samples=samples, seed=seed)
        head = source.head(task, device)
        zero, nonlinear, linear = linearised_logits(
            visual, pre, vectors[task], images, head, batch_size
        )
        row = {
            "task": task,
            "label": label or source.name,
            "samples": len(labels),
            "zeroshot": _accuracy(zero, labels),
            "nonlinear": _accuracy(nonlinear, labels),
            "linearised": _accuracy(linear, labels),
        }
        row["gap"] = row["nonlinear"] - row["linearised"]
        rows.append(row)
        progress(index + 1, len(tasks), task)
    return pd.DataFrame(rows)
