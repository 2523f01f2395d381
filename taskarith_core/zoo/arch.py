"""The zoo's architecture as open_clip data: a JSON model config plus a compact tokenizer.

The model is a plain open_clip ``CLIP`` (ViT image tower, transformer text tower) built by
``open_clip.create_model`` from a registered config. Its text tower uses a compact vocabulary: the
few hundred BPE ids that the zoo's captions and prompts contain, renumbered in increasing order so
that the end-of-text token keeps the largest id (open_clip pools the text at the argmax id).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import open_clip
import torch

__all__ = [
    "ARCH_NAME",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "CompactTokenizer",
    "build_vocabulary",
    "model_config",
    "to_float",
]

ARCH_NAME = "taskarith-zoo-vit"
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25
CONTEXT_LENGTH = 16


def model_config(
    vocab_size: int, width: int = 64, layers: int = 4, text_width: int = 64, embed_dim: int = 64
) -> dict:
    """open_clip config of a ViT on 28x28 images with 7x7 patches (16 tokens + class token)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "image_size": 28,
            "layers": layers,
            "width": width,
            "head_width": 32,
            "patch_size": 7,
            "mlp_ratio": 4.0,
        },
        "text_cfg": {
            "context_length": CONTEXT_LENGTH,
            "vocab_size": vocab_size,
            "width": text_width,
            "heads": max(1, text_width // 32),
            "layers": 2,
        },
    }


@functools.cache
def _base_tokenizer():
    """open_clip's BPE tokenizer, built once per process on first use: reading its 49k merges
    takes ~0.2 s, most of the time it takes to open the zoo, and evaluation never needs it (the
    zero-shot heads are stored)."""
    return open_clip.SimpleTokenizer(context_length=CONTEXT_LENGTH)


def build_vocabulary(texts: Iterable[str]) -> list[int]:
    """Sorted original BPE ids used by ``texts``; index 0 stays the padding id 0."""
    ids = _base_tokenizer()(list(texts)).unique().tolist()
    return sorted(set(ids) | {0})


class CompactTokenizer:
    """open_clip's tokenizer followed by a lookup onto the compact vocabulary.

    Words outside the vocabulary (e.g. a class name typed by a user) map to the padding id 0,
    so the text tower ignores them rather than failing.
    """

    def __init__(self, vocabulary: Sequence[int]):
        self.vocabulary = list(vocabulary)
        self.lookup = torch.zeros(max(self.vocabulary) + 1, dtype=torch.long)
        self.lookup[torch.tensor(self.vocabulary)] = torch.arange(len(self.vocabulary))
        self.context_length = CONTEXT_LENGTH

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None
    ) -> torch.Tensor:
        ids = _base_tokenizer()(texts, context_length or self.context_length)
        ids = ids.clamp(max=len(self.lookup) - 1)
        return self.lookup[ids]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, 28, 28] -> normalised float32, the zoo's only preprocessing."""
    return (images.float() / 255.0 - IMAGE_MEAN) / IMAGE_STD
