"""Checkpoint formats -> one cached ``.safetensors`` in open_clip key names, checked per arch.

Real checkpoints come in three shapes: open_clip state dicts (whole CLIP or image tower, maybe under
a ``module.`` / ``model.`` prefix), Hugging Face ``transformers`` CLIP models (``vision_model.*``,
``text_model.*``; FusionBench's fine-tuned towers), and the task-vectors release's pickled
``ImageEncoder`` modules. Each is converted once into open_clip's names (``visual.`` prefix for the
image tower) so that every later step reads plain safetensors lazily, one tensor at a time.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..errors import InputError, file_key
from ..io import PICKLE_SUFFIXES, load_state_dict, save_state_dict
from ..keys import VISUAL_PREFIX
from ..models.clip import check_compatible
from .adapters import is_peft_folder, is_tangent_state, merge_peft_lora, tangent_to_open_clip
from .safe_unpickle import load_pickled_module_state, refuse_torchscript

__all__ = [
    "FORMATS",
    "arch_shapes",
    "convert_checkpoint",
    "detect_format",
    "from_hf",
    "normalise_open_clip",
    "read_checkpoint",
]

FORMATS = ("auto", "open_clip", "hf")
_WRAPPERS = ("module.", "model.", "image_encoder.", "clip_model.", "state_dict.")
_HF_LAYER = re.compile(r"^(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)$")
_HF_BLOCK_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_HF_SINGLE = {
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.pre_layernorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layernorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_HF_TRANSPOSED = {
    "visual_projection.weight": "visual.proj",
    "text_projection.weight": "text_projection",
}
_HF_IGNORED = ("position_ids",)


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove prefixes that training wrappers add (DDP ``module.``, ImageEncoder ``model.``)."""
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPERS:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _hf_bare_vision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5 saves ``CLIPVisionModel`` without the ``vision_model.`` prefix: restore it."""
    if "embeddings.patch_embedding.weight" not in state:
        return dict(state)
    return {
        (k if k.startswith("visual_projection.") else f"vision_model.{k}"): v
        for k, v in state.items()
    }


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """``hf`` for transformers key names, ``open_clip`` otherwise (checked later by the arch)."""
    state = _hf_bare_vision(_strip_wrappers(state))
    if any(_HF_LAYER.match(k) or k.startswith(("vision_model.", "text_model.")) for k in state):
        return "hf"
    return "open_clip"


def normalise_open_clip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip keys with the ``visual.`` prefix; a bare image tower gets the prefix added."""
    state = _strip_wrappers(state)
    if any(k.startswith(VISUAL_PREFIX) for k in state):
        return state
    if "conv1.weight" in state or "class_embedding" in state:
        return {f"{VISUAL_PREFIX}{k}": v for k, v in state.items()}
    return state


def _hf_block_key(tower: str, index: str, rest: str) -> str | None:
    base = f"{VISUAL_PREFIX}transformer" if tower == "vision" else "transformer"
    for hf_part, oc_part in _HF_BLOCK_PARTS.items():
        if rest.startswith(hf_part + "."):
            return f"{base}.resblocks.{index}.{oc_part}{rest[len(hf_part) :]}"
    return None


def from_hf(state: Mapping[str, torch.Tensor], source: str | Path = "") -> dict[str, torch.Tensor]:
    """transformers CLIP(Vision)Model keys -> open_clip keys; q, k, v become one ``in_proj``.

    HF's ``Linear`` projections hold ``[out, in]`` weights; open_clip multiplies by ``proj``
    (``[in, out]``), hence the transposes. Both scale queries by head_dim**-0.5 inside attention."""
    state = _hf_bare_vision(_strip_wrappers(state))
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    for position, (key, value) in enumerate(state.items()):
        if key.endswith(_HF_IGNORED):
            continue
        if key in _HF_SINGLE:
            out[_HF_SINGLE[key]] = value
            continue
        if key in _HF_TRANSPOSED:
            out[_HF_TRANSPOSED[key]] = value.t().contiguous()
            continue
        match = _HF_LAYER.match(key)
        if match is None:
            raise InputError(
                f"{source}: key {file_key(key, position)} is not a transformers CLIP key this "
                "converter knows; "
                "pass --format open_clip if the file uses open_clip names"
            )
        tower, index, rest = match.groups()
        qkv_match = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if qkv_match:
            qkv.setdefault((tower, index, qkv_match.group(2)), {})[qkv_match.group(1)] = value
            continue
        mapped = _hf_block_key(tower, index, rest)
        if mapped is None:
            raise InputError(
                f"{source}: key {file_key(key, position)} has no open_clip counterpart; "
                "check the file"
            )
        out[mapped] = value
    for (tower, index, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise InputError(
                f"{source}: layer {index} of the {tower} tower lacks one of q/k/v_proj.{kind}"
            )
        base = f"{VISUAL_PREFIX}transformer" if tower == "vision" else "transformer"
        out[f"{base}.resblocks.{index}.attn.in_proj_{kind}"] = torch.cat(
            [parts["q"], parts["k"], parts["v"]], dim=0
        )
    return out


def _resolve_hf_folder(path: Path) -> Path:
    """A ``save_pretrained`` folder: its single weights file (sharded folders are not supported)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    raise InputError(
        f"{path}: folder holds neither model.safetensors nor pytorch_model.bin; "
        "give the checkpoint file itself"
    )


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Raw name -> tensor mapping of any supported file; pickles only when trusted.

    A pickle is first read with ``torch.load(weights_only=True)``; a whole pickled module (the
    task-vectors release) falls back to the restricted unpickler of :mod:`.safe_unpickle`."""
    path = Path(path)
    if path.is_dir():
        path = _resolve_hf_folder(path)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        return load_state_dict(path)
    if not trust_pickle:
        raise InputError(
            f"{path}: is a pickle file, which can run arbitrary code when loaded; pass "
            "--trust-pickle (or trust_pickle: true in the manifest) only if you trust its source"
        )
    refuse_torchscript(path)
    try:
        return load_state_dict(path, trust_pickle=True)
    except InputError as plain_error:  # a whole module, or a dict holding more than tensors
        if not any(m in str(plain_error) for m in ("could not be loaded", "does not hold")):
            raise
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path}: is a legacy (pre torch 1.6) pickle of more than tensors; re-save it with "
            "torch.save(model.state_dict(), ...) where you trust it"
        )
    return load_pickled_module_state(path)


def arch_shapes(arch: str, visual_only: bool = True) -> dict[str, torch.Size]:
    """Key -> shape of ``arch``'s state dict, built on the meta device (no memory, no init)."""
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise InputError(
            f"unknown open_clip architecture {arch!r}; use a name from open_clip.list_models() "
            "(e.g. ViT-B-32, ViT-B-16, ViT-L-14) or give arch_config in the manifest"
        )
    cfg = dict(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    with torch.device("meta"):
        model = (CustomTextCLIP if custom else CLIP)(**cfg)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if visual_only:
        shapes = {k: s for k, s in shapes.items() if k.startswith(VISUAL_PREFIX)}
    return shapes


def _to_open_clip(state: dict[str, torch.Tensor], fmt: str, source: Path) -> dict:
    if fmt not in FORMATS:
        raise InputError(f"unknown checkpoint format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(state)
    return from_hf(state, source) if fmt == "hf" else normalise_open_clip(state)


def _fill_missing(
    state: dict[str, torch.Tensor], fill: Mapping[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """Keys a file lacks but another supplies: a ``CLIPVisionModel`` has no projection (taken from
    the pretrained CLIP, never trained), an image-encoder pickle has no text tower."""
    if fill:
        for key, value in fill.items():
            state.setdefault(key, value)
    return state


#: what each special checkpoint kind may be declared as in a manifest
_KIND_PARADIGMS = {
    "a PEFT LoRA adapter": ("lora", "l-lora"),
    "a linearised (tangent) checkpoint": ("linearized",),
}


def _require_paradigm(path: Path, kind: str, paradigm: str | None) -> None:
    allowed = _KIND_PARADIGMS[kind]
    if paradigm is not None and paradigm not in allowed:
        raise InputError(
            f"{path}: is {kind} but its task's paradigm is {paradigm!r}; set paradigm: "
            f"{' or '.join(allowed)} in the manifest"
        )


def _read_any(path: Path, arch: str, fmt: str, trust_pickle: bool, base, paradigm):
    """open_clip tensors of a plain, transformers, PEFT-adapter or tangent checkpoint."""
    if is_peft_folder(path):
        _require_paradigm(path, "a PEFT LoRA adapter", paradigm)
        if base is None:
            raise InputError(
                f"{path}: is a LoRA adapter, read on top of its pretrained model; list it as a "
                "task's checkpoint in a manifest with paradigm: lora or l-lora"
            )
        return merge_peft_lora(path, base(), arch)
    raw = read_checkpoint(path, trust_pickle)
    if is_tangent_state(raw):
        _require_paradigm(path, "a linearised (tangent) checkpoint", paradigm)
        if base is None:
            raise InputError(
                f"{path}: is a linearised (tangent) checkpoint, checked against its pretrained "
                "model; list it as a task's checkpoint in a manifest with paradigm: linearized"
            )
        return tangent_to_open_clip(raw, arch, base(), path)
    if paradigm in ("lora", "l-lora"):
        raise InputError(
            f"{path}: is not a PEFT LoRA folder (adapter_config.json + "
            "adapter_model.safetensors) though its task's paradigm is a LoRA one; give the folder"
        )
    return _to_open_clip(raw, fmt, path)


def cache_name(path: Path, arch: str, visual_only: bool, fmt: str) -> str:
    """Cache file name keyed by the source file's identity (path, size, mtime) and the target."""
    stat = path.stat()
    ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{arch}|{visual_only}|{fmt}"
    kind = "visual" if visual_only else "clip"
    return f"{path.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}-{kind}.safetensors"


def convert_checkpoint(
    path: str | Path,
    arch: str,
    out: str | Path,
    *,
    visual_only: bool = True,
    fmt: str = "auto",
    trust_pickle: bool = False,
    fill: Mapping[str, torch.Tensor] | None = None,
    base: Callable[[], Mapping[str, torch.Tensor]] | None = None,
    paradigm: str | None = None,
) -> Path:
    """Convert one checkpoint into ``out`` (float32 safetensors); refuses another architecture.

    ``visual_only`` keeps the image tower (fine-tuned models); ``False`` keeps the whole CLIP, which
    the pretrained model needs for its text tower (zero-shot heads). A PEFT LoRA folder or a
    tangent checkpoint becomes full weights on ``base()`` (the pretrained CLIP), and must be
    declared with a fitting ``paradigm``. Nothing is written on error."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found; check the path")
    state = _read_any(path, arch, fmt, trust_pickle, base, paradigm)
    reference = arch_shapes(arch, visual_only=visual_only)
    if visual_only:
        state = {k: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}
    else:
        state = {k: v for k, v in state.items() if k in reference or k.startswith(VISUAL_PREFIX)}
    state = _fill_missing(state, {k: v for k, v in (fill or {}).items() if k in reference})
    if not state:
        raise InputError(f"{path}: holds no image-tower tensor (no 'visual.*' or HF key)")
    text_missing = [k for k in reference if not k.startswith(VISUAL_PREFIX) and k not in state]
    if not visual_only and text_missing:
        raise InputError(
            f"{path}: lacks the text tower ({text_missing[0]!r}) that zero-shot heads need; give a "
            "whole CLIP as pretrained, or add text_weights: FILE (a whole CLIP) to the manifest"
        )
    check_compatible(reference, state, f"{path} (as {arch})")
    clean = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    meta = {"source": str(path), "arch": arch, "format": fmt}
    return save_state_dict(clean, out, metadata=meta)
