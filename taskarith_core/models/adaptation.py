"""The model forward and unlabeled images that test-time adaptive merges (AdaMerging) learn on.

:func:`adaptation_for` turns a model source into a :class:`~taskarith_core.fusion.adamerging.
Adaptation`: each task's test images (labels dropped), its frozen zero-shot head, and the source's
image tower called functionally with any weights, so gradients reach the merging coefficients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..errors import InputError, describe
from ..fusion.adamerging import Adaptation
from ..progress import Progress
from .evaluation import head_for, split_tensors
from .fast_forward import fast_features, tower_spec

__all__ = ["adaptation_for"]


class _Tower(nn.Module):
    """The image tower under the name ``visual``, so a state dict's keys address its weights;
    run through the functional forward when it supports the tower (fewer, larger ops: the
    coefficients' every step runs it forward and backward)."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual
        self.spec = tower_spec(visual)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.spec is None:
            return self.visual(images)
        return fast_features(self.visual, self.spec, images)


def _images(source: Any, task: str, max_samples: int | None) -> torch.Tensor:
    try:
        images, _labels = split_tensors(source, task, "test", max_samples)
    except (InputError, FileNotFoundError, OSError, NotImplementedError) as exc:
        why = str(exc) if isinstance(exc, InputError) else describe(exc)  # ours, or its kind only
        raise InputError(
            f"adamerging learns on unlabeled test images, and {source.name} has none for task "
            f"{task!r}; pick a source with task data ({why})"
        ) from exc
    if len(images) == 0:
        raise InputError(
            f"adamerging learns on unlabeled test images, and {source.name} has none for task "
            f"{task!r}; pick a source with task data"
        )
    return images


def adaptation_for(
    source: Any,
    tasks: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    max_samples: int | None = None,
    progress: Progress | None = None,
) -> Adaptation:
    """What AdaMerging needs from ``source`` for ``tasks``, in the fine-tuned models' order."""
    tower = _Tower(source.build_visual(device).eval())
    for parameter in tower.parameters():
        parameter.requires_grad_(False)

    def features(state: Mapping[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return functional_call(tower, dict(state), (images,))

    return Adaptation(
        images=[_images(source, task, max_samples) for task in tasks],
        heads=[head_for(source, task, device) for task in tasks],
        features=features,
        device=device,
        progress=progress if progress is not None else _bar(),
    )


def _bar() -> Progress:
    """A tqdm bar on stderr for callers without their own progress display (sweeps, reproduce):
    the coefficients take hundreds of steps."""
    from ..cli.common import tqdm_progress

    return tqdm_progress("AdaMerging")
