"""Fine-tuned checkpoints that are not plain weights: PEFT LoRA adapters and tangent checkpoints.

- PEFT LoRA (``adapter_config.json`` + ``adapter_model.safetensors``, the format of FusionBench's
  CLIP LoRA / L-LoRA checkpoints) on a transformers CLIP image tower: read as JSON and safetensors
  only (no code from the folder is imported) and turned into theta_pre + s B A per target matrix,
  with s = lora_alpha / r (or / sqrt(r) with rsLoRA). q, k, v land in their rows of open_clip's
  packed ``in_proj_weight``. For L-LoRA the same weights are evaluated in the linearised model.
- Tangent checkpoints of Ortiz-Jimenez et al. (a state dict of ``model.params.<i>`` = theta and
  ``model.params0.<i>`` = theta_0, numbered in the parameter order of the image encoder, plus the
  model's name): mapped by that order onto open_clip's names, and accepted only when their theta_0
  is the manifest's pretrained model (which also proves the order was read right).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import InputError
from ..io import load_state_dict
from ..keys import VISUAL_PREFIX

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "is_peft_folder",
    "is_tangent_state",
    "merge_peft_lora",
    "tangent_to_open_clip",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?(vision|text)_model\.encoder\.layers\.(\d+)\."
    r"(self_attn\.(?:q|k|v|out)_proj|mlp\.fc1|mlp\.fc2)\.lora_(A|B)(?:\.default)?\.weight$"
)
#: transformers module -> (open_clip tensor under ``visual.transformer.resblocks.<i>.``, rows)
_TARGETS = {
    "self_attn.q_proj": ("attn.in_proj_weight", 0),
    "self_attn.k_proj": ("attn.in_proj_weight", 1),
    "self_attn.v_proj": ("attn.in_proj_weight", 2),
    "self_attn.out_proj": ("attn.out_proj.weight", None),
    "mlp.fc1": ("mlp.c_fc.weight", None),
    "mlp.fc2": ("mlp.c_proj.weight", None),
}
_TANGENT_KEY = re.compile(r"^(?:model\.)?(params0?)\.(\d+)$")


def is_peft_folder(path: Path) -> bool:
    """A folder holding a PEFT adapter (its config file)."""
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def _adapter_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError, UnicodeError) as exc:
        raise InputError(
            f"{folder / ADAPTER_CONFIG}: is not readable JSON ({type(exc).__name__})"
        ) from exc
    if not isinstance(config, dict) or str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InputError(f"{folder / ADAPTER_CONFIG}: is not a LoRA adapter config (peft_type)")
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)):
        raise InputError(f"{folder / ADAPTER_CONFIG}: needs a positive whole r and lora_alpha")
    if config.get("fan_in_fan_out"):
        raise InputError(
            f"{folder / ADAPTER_CONFIG}: fan_in_fan_out adapters (GPT-2 style) are not CLIP "
            "adapters; use an adapter of a CLIP image tower"
        )
    return config


def _scaling(config: dict) -> float:
    rank = config["r"]
    alpha = config.get("lora_alpha", rank)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _pairs(folder: Path, tensors: Mapping[str, torch.Tensor]) -> dict[tuple[int, str], dict]:
    """(layer, module) -> {"A": tensor, "B": tensor} of the image tower; text-tower adapters are
    skipped (only the image tower is merged)."""
    pairs: dict[tuple[int, str], dict] = {}
    for position, (key, value) in enumerate(tensors.items(), start=1):
        match = _LORA_KEY.match(key)
        if match is None:
            raise InputError(
                f"{folder / ADAPTER_WEIGHTS}: tensor number {position} is not a LoRA matrix of a "
                "CLIP attention or MLP projection; use an adapter of a transformers CLIP model"
            )
        tower, layer, module, side = match.groups()
        if tower == "vision":
            pairs.setdefault((int(layer), module), {})[side] = value.float()
    return pairs


def merge_peft_lora(
    folder: str | Path, pretrained: Mapping[str, torch.Tensor], arch: str = ""
) -> dict[str, torch.Tensor]:
    """theta_pre + s B A for every adapted image-tower matrix (``visual.*`` keys, float32).

    Refuses, in one sentence each: a rank that differs from ``r``, a layer or module the
    architecture lacks, matrices of another width (an adapter made for another architecture)."""
    folder = Path(folder)
    config = _adapter_config(folder)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise InputError(f"{folder}: has no {ADAPTER_WEIGHTS}; save the adapter with PEFT")
    pairs = _pairs(folder, load_state_dict(weights))
    if not pairs:
        raise InputError(f"{weights}: adapts no image-tower matrix; nothing to merge")
    out = {k: v.float().clone() for k, v in pretrained.items() if k.startswith(VISUAL_PREFIX)}
    scale, rank = _scaling(config), config["r"]
    for (layer, module), sides in sorted(pairs.items()):
        target, part = _TARGETS[module]
        key = f"{VISUAL_PREFIX}transformer.resblocks.{layer}.{target}"
        where = f"{weights}: layer {layer} {module}"
        if set(sides) != {"A", "B"}:
            raise InputError(f"{where} has only one of lora_A / lora_B; the adapter is incomplete")
        if key not in out:
            raise InputError(
                f"{where} is a target module missing from the architecture {arch} ({key} does "
                "not exist); use an adapter made for this architecture"
            )
        a, b = sides["A"], sides["B"]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise InputError(
                f"{where}: rank {a.shape[0]} does not match r = {rank} of {ADAPTER_CONFIG}; "
                "the config and the weights belong to different adapters"
            )
        rows = out[key].shape[0] // 3 if part is not None else out[key].shape[0]
        if a.shape[1] != out[key].shape[1] or b.shape[0] != rows:
            raise InputError(
                f"{where}: matrices of shape {tuple(b.shape[:1]) + tuple(a.shape[1:])} do not fit "
                f"{key} of {arch} (rows x columns {rows} x {out[key].shape[1]}); the adapter's "
                "base is another architecture"
            )
        start = 0 if part is None else part * rows
        out[key][start : start + rows] += scale * (b @ a)
    return out


def is_tangent_state(state: Mapping[str, object]) -> bool:
    """A tangent-task-arithmetic checkpoint: ``model.params.<i>`` and ``model.params0.<i>``."""
    keys = [k for k in state if k != "model_name"]
    return bool(keys) and all(_TANGENT_KEY.match(k) for k in keys)


def _encoder_names(arch: str) -> list[str]:
    """Parameter names of the task-vectors ``ImageEncoder`` (a whole CLIP without its text
    transformer), in the order ``named_parameters`` lists them: the numbering of tangent files."""
    import open_clip
    from open_clip.model import CLIP

    with torch.device("meta"):
        model = CLIP(**open_clip.get_model_config(arch))
    return [n for n, _ in model.named_parameters() if not n.startswith("transformer.")]


def tangent_to_open_clip(
    state: Mapping[str, torch.Tensor],
    arch: str,
    pretrained: Mapping[str, torch.Tensor],
    source: str | Path = "",
) -> dict[str, torch.Tensor]:
    """theta of a tangent checkpoint as an open_clip image tower (``visual.*`` keys)."""
    lists: dict[str, dict[int, torch.Tensor]] = {"params": {}, "params0": {}}
    for key, value in state.items():
        match = _TANGENT_KEY.match(key)
        if match is not None and isinstance(value, torch.Tensor):
            lists[match.group(1)][int(match.group(2))] = value
    names = _encoder_names(arch)
    if len(lists["params"]) != len(names) or len(lists["params0"]) != len(names):
        raise InputError(
            f"{source}: holds {len(lists['params'])} linearised parameters but an image encoder "
            f"of {arch} has {len(names)}; use a tangent checkpoint of this architecture"
        )
    theta, theta0 = {}, {}
    for index, name in enumerate(names):
        if not name.startswith(VISUAL_PREFIX):
            continue
        theta[name], theta0[name] = lists["params"][index], lists["params0"][index]
        if tuple(theta[name].shape) != tuple(pretrained[name].shape):
            raise InputError(
                f"{source}: linearised parameter {index} does not have the shape of {name}; "
                f"use a tangent checkpoint of {arch}"
            )
    for name, value in theta0.items():
        ref = pretrained[name].float()
        if not torch.allclose(value.float(), ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max())):
            raise InputError(
                f"{source}: was linearised around other weights than the manifest's pretrained "
                f"model ({name} differs); give the pretrained checkpoint it was trained from"
            )
    return {k: v.float() for k, v in theta.items()}
