"""A miniature model source for tests: a random open_clip ViT, fake fine-tunes, labelled noise.

``make_tiny_source(tmp_dir)`` builds in about a second and needs no training. It is a real
open_clip CLIP (registered config, safetensors on disk, heads from its text tower), so every
code path of the engine runs on it. How the numbers are made meaningful without training:

- the pretrained image tower is random, with ``ln_post.bias`` shifted so that the mean image
  embedding is zero (otherwise a random tower predicts one class for every input);
- theta_t = theta_pre + a seeded random delta (scaled per tensor), re-centred the same way;
- task t's images are Gaussian noise around a task-specific pattern, labelled by theta_t's own
  predictions, picked so that classes are as balanced as the model allows.

So theta_t scores 100% on its task, theta_pre clearly less, and merges land in between; the control
set is labelled by theta_pre (100% zero-shot control accuracy), which fine-tuning lowers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from taskarith_core.io import save_state_dict
from taskarith_core.keys import VISUAL_PREFIX, is_attention_weight
from taskarith_core.models.clip import create_clip, register_arch, visual_state, zero_shot_head
from taskarith_core.models.files import FileSource

__all__ = ["TINY_ARCH", "TINY_CONFIG", "TINY_SPLIT_SIZES", "make_tiny_source"]

TINY_ARCH = "taskarith-tiny-vit"
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 16,
        "patch_size": 8,
        "width": 32,
        "head_width": 16,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_SPLIT_SIZES = {"train": 48, "val": 32, "test": 64}
TEMPLATES = ["a photo of a {}.", "a picture showing {}."]
_WORDS = [
    "apple", "river", "circle", "seven", "zebra", "cloud", "arrow", "stripe", "violet", "engine",
    "forest", "letter", "square", "orange", "tiger", "bridge", "spiral", "window", "candle",
    "rocket",
]  # fmt: skip
_DELTA_SCALE = 0.15  # gives theta_pre roughly 50-70% agreement with theta_t


def _classnames(n_tasks: int, n_classes: int) -> dict[str, list[str]]:
    names = {}
    for i, task in enumerate([*(f"task{i}" for i in range(n_tasks)), "control"]):
        names[task] = [f"{_WORDS[(i * n_classes + c) % len(_WORDS)]} {c}" for c in range(n_classes)]
    return names


@torch.no_grad()
def _centre(visual: torch.nn.Module, images: torch.Tensor) -> None:
    """Shift ``ln_post.bias`` so the mean pooled feature is zero (balanced predictions)."""
    feats: list[torch.Tensor] = []
    hook = visual.ln_post.register_forward_hook(lambda _m, _i, out: feats.append(out))
    visual(images)
    hook.remove()
    pooled = feats[0][:, 0] if feats[0].dim() == 3 else feats[0]
    visual.ln_post.bias -= pooled.mean(dim=0)


def _delta_allowed(key: str, paradigm: str, mask: dict[str, torch.Tensor] | None) -> torch.Tensor:
    if paradigm == "attention":
        return torch.tensor(1.0 if is_attention_weight(key) else 0.0)
    if paradigm == "talos" and mask is not None:
        return mask[key]
    return torch.tensor(1.0)


def _fake_finetune(
    pre: dict[str, torch.Tensor], paradigm: str, gen: torch.Generator
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    mask = None
    if paradigm == "talos":  # 10% of entries trainable, embeddings and proj frozen
        frozen = ("class_embedding", "positional_embedding", "conv1", ".proj")
        mask = {
            k: (torch.rand(v.shape, generator=gen) < 0.1).float() * (not k.endswith(frozen))
            for k, v in pre.items()
        }
    ft = {}
    for key, value in pre.items():
        noise = torch.randn(value.shape, generator=gen)
        scale = _DELTA_SCALE * (value.abs().mean() + 0.02)
        ft[key] = value + scale * noise * _delta_allowed(key, paradigm, mask)
    return ft, mask


@torch.no_grad()
def _pick_labelled(
    visual: torch.nn.Module, head: torch.Tensor, pool: torch.Tensor, sizes: dict[str, int]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Label the pool by the model's predictions, then deal images round-robin over classes."""
    preds = (F.normalize(visual(pool), dim=-1) @ head.T).argmax(dim=1)
    queues = [torch.nonzero(preds == c).flatten().tolist() for c in range(head.shape[0])]
    order: list[int] = []
    while any(queues):
        order.extend(q.pop() for q in queues if q)
    out, start = {}, 0
    for split, n in sizes.items():
        idx = torch.tensor(sorted(order[start : start + n]))
        out[split] = (pool[idx].clone(), preds[idx].clone())
        start += n
    return out


def make_tiny_source(
    tmp_dir: str | Path, n_tasks: int = 3, seed: int = 0, paradigm: str = "full"
) -> FileSource:
    """Build it under ``tmp_dir``: pretrained + per-task safetensors on disk, data in memory."""
    root = Path(tmp_dir)
    (root / paradigm).mkdir(parents=True, exist_ok=True)
    register_arch(TINY_CONFIG, TINY_ARCH)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_clip(TINY_ARCH)
    import open_clip

    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    tasks = [f"task{i}" for i in range(n_tasks)]
    classnames = _classnames(n_tasks, 4)
    size = TINY_CONFIG["vision_cfg"]["image_size"]
    patterns = {t: torch.randn(1, 3, size, size, generator=gen) for t in [*tasks, "control"]}
    pools = {
        t: p + 2.0 * torch.randn(1200, 3, size, size, generator=gen) for t, p in patterns.items()
    }
    _centre(model.visual, torch.cat(list(pools.values())))
    save_state_dict(model.state_dict(), root / "pretrained.safetensors")
    heads = {t: zero_shot_head(model, tokenizer, c, TEMPLATES) for t, c in classnames.items()}
    pre = visual_state(model)
    data = {
        "control": _pick_labelled(
            model.visual, heads["control"], pools["control"], TINY_SPLIT_SIZES
        )
    }
    finetuned, masks = {}, {}
    for task in tasks:
        ft, mask = _fake_finetune(pre, paradigm, gen)
        model.visual.load_state_dict({k[len(VISUAL_PREFIX) :]: v for k, v in ft.items()})
        if paradigm == "full":
            _centre(model.visual, pools[task])
            ft = visual_state(model)
        finetuned[task] = save_state_dict(ft, root / paradigm / f"{task}.safetensors")
        if mask is not None:
            masks[task] = save_state_dict(mask, root / paradigm / f"{task}.mask.safetensors")
        data[task] = _pick_labelled(model.visual, heads[task], pools[task], TINY_SPLIT_SIZES)
    tensors = {(t, s): TensorDataset(*xy) for t, splits in data.items() for s, xy in splits.items()}
    return FileSource(
        name=f"tiny/{paradigm}",
        arch=TINY_ARCH,
        pretrained=root / "pretrained.safetensors",
        finetuned=finetuned,
        classnames=classnames,
        data=lambda task, split: tensors[(task, split)],
        heads=heads,
        templates=TEMPLATES,
        control_task="control",
        talos_masks=masks or None,
    )
