"""What a state-dict key means: which transformer block, and which kind of tensor.

Keys follow open_clip's names for the image tower, with the ``visual.`` prefix that the full CLIP
state dict uses, e.g. ``visual.transformer.resblocks.3.attn.in_proj_weight``.
"""

from __future__ import annotations

import re

__all__ = [
    "ATTENTION_WEIGHT_SUFFIXES",
    "KINDS",
    "VISUAL_PREFIX",
    "block_index",
    "is_attention_weight",
    "tensor_kind",
]

VISUAL_PREFIX = "visual."
KINDS = ("attention", "mlp", "layernorm", "embedding", "other")
ATTENTION_WEIGHT_SUFFIXES = ("attn.in_proj_weight", "attn.out_proj.weight")

_BLOCK = re.compile(r"resblocks\.(\d+)\.")


def block_index(key: str) -> int:
    """Transformer block number, or -1 for tensors outside the blocks (embeddings, proj)."""
    match = _BLOCK.search(key)
    return int(match.group(1)) if match else -1


def tensor_kind(key: str) -> str:
    """Classify a key as attention / mlp / layernorm / embedding / other."""
    leaf = key.rsplit(".", 2)
    if ".attn." in key:
        return "attention"
    if ".mlp." in key:
        return "mlp"
    if any(part.startswith("ln") for part in leaf[-2:]) or ".ln_" in key:
        return "layernorm"
    if any(s in key for s in ("conv1", "class_embedding", "positional_embedding", "patch_embed")):
        return "embedding"
    return "other"


def is_attention_weight(key: str) -> bool:
    """W_q, W_k, W_v (packed as in_proj_weight) and W_o: what attention-only fine-tuning edits."""
    return key.endswith(ATTENTION_WEIGHT_SUFFIXES)
