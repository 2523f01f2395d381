"""Predicted labels on a few test images, for the galleries that make forgetting visible."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["display_images", "predict_labels"]

_DISPLAY_SIDE = 112  # small task images are upscaled (nearest) so they can be seen


def display_images(images: Any) -> list[np.ndarray]:
    """Preprocessed float images [N, 3, H, W] -> uint8 HWC, min-max scaled per image.

    The source's normalisation is not known here; per-image scaling shows the content faithfully
    enough for "what did the model see".
    """
    import torch
    import torch.nn.functional as F

    x = images.float()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - low) / (high - low).clamp_min(1e-8)
    side = x.shape[-1]
    if side < _DISPLAY_SIDE:
        x = F.interpolate(x, scale_factor=max(1, _DISPLAY_SIDE // side), mode="nearest")
    x = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return list(x.numpy())


def predict_labels(service: Any, state: dict, task: str, count: int):
    """(display images, true labels, predicted labels) of the first ``count`` test images."""
    from ..models.clip import load_visual_state
    from ..models.evaluation import batched_logits, split_tensors

    source = service.source
    images, labels = split_tensors(source, task, "test", max_samples=count, seed=0)
    visual = load_visual_state(source.build_visual(service.device), state)
    head = source.head(task, service.device)
    logits = batched_logits(visual, images, head, device=service.device)
    preds = logits.argmax(dim=-1).cpu()
    return display_images(images), labels.tolist(), preds.tolist()
