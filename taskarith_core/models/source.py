"""The contract every model source fulfils: the embedded zoo, a user's manifest, a test's mini zoo.

Analyses, the page and the CLI only talk to a :class:`ModelSource`, so the same code runs on the
shipped zoo and on real open_clip checkpoints. State dicts hold the image tower only, with
open_clip's full-model key names (``visual.`` prefix), e.g.
``visual.transformer.resblocks.0.attn.in_proj_weight``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = ["ModelSource", "Split", "SPLITS"]

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


@runtime_checkable
class ModelSource(Protocol):
    """Pretrained + fine-tuned image towers of one CLIP, with each task's data and frozen head."""

    name: str  #: shown on the page and in cards, e.g. "zoo/full" or a manifest's name
    arch: str  #: open_clip model name, registered with open_clip before use
    tasks: list[str]  #: task names in display order (the control set is not one of them)
    control_task: str | None  #: data set used as "control" for negation, or None

    def pretrained_path(self) -> Path:
        """File of the pretrained weights (its hash keys caches)."""
        ...

    def finetuned_path(self, task: str) -> Path:
        """File of the checkpoint fine-tuned on ``task``."""
        ...

    def load_pretrained(self) -> dict[str, torch.Tensor]:
        """Image-tower state dict of theta_pre (``visual.*`` keys, float32, CPU)."""
        ...

    def load_finetuned(self, task: str) -> dict[str, torch.Tensor]:
        """Image-tower state dict of theta_t with the same keys and shapes as theta_pre."""
        ...

    def classnames(self, task: str) -> list[str]:
        """Class names of ``task`` (or of the control set), in label order."""
        ...

    def dataset(self, task: str, split: Split) -> Dataset:
        """Items are ``(preprocessed image tensor [3, H, W], int label)``."""
        ...

    def head(self, task: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """Frozen zero-shot head [classes, embed_dim]: normalised text embeddings x logit scale."""
        ...

    def build_visual(self, device: torch.device | str = "cpu") -> nn.Module:
        """A fresh open_clip image tower (``model.visual``) holding theta_pre, in eval mode."""
        ...

    def talos_mask(self, task: str) -> dict[str, torch.Tensor] | None:
        """TaLoS gradient mask used to fine-tune ``task`` (1 = trainable), if there is one."""
        ...
