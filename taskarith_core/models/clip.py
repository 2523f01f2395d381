"""open_clip glue: register architectures, build models, move image-tower weights, zero-shot heads.

Every model source (the zoo, a user's manifest, the tests' tiny source) goes through these few
functions, so a checkpoint that does not fit its architecture is reported the same way everywhere:
the first key that is missing, unexpected, or of another shape, with both shapes.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, describe
from ..keys import VISUAL_PREFIX

__all__ = [
    "build_visual_tower",
    "check_compatible",
    "create_clip",
    "encode_texts",
    "load_visual_state",
    "register_arch",
    "visual_state",
    "zero_shot_head",
]

_REGISTERED: dict[str, dict[str, Any]] = {}


def _config_dir() -> Path:
    """Per-process folder for the JSON files open_clip's registry reads (it only takes paths, and
    re-reads them whenever a config is added, so they must live as long as the process: removed
    at exit rather than left in the temp folder)."""
    folder = Path(tempfile.gettempdir()) / f"taskarith_open_clip_configs_{os.getpid()}"
    if not folder.is_dir():
        _remove_orphaned_config_dirs(folder.parent)
        folder.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _remove_orphaned_config_dirs(parent: Path) -> None:
    """Config folders of processes that ended without running their exit handlers (killed
    servers, pool workers): their pid no longer exists."""
    for old in parent.glob("taskarith_open_clip_configs_*"):
        pid = old.name.rsplit("_", 1)[-1]
        if not pid.isdigit() or int(pid) <= 0:
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (PermissionError, OSError):  # alive under another user, or cannot tell
            continue


def register_arch(config: str | Path | Mapping[str, Any], name: str) -> str:
    """Make ``name`` known to ``open_clip.create_model``; re-registering the same config is free."""
    import open_clip

    if isinstance(config, (str, Path)):
        path = Path(config)
        if not path.is_file():
            raise InputError(f"{path}: open_clip config file not found; check the path")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{path}: is not valid JSON ({describe(exc)}); fix the config file"
            ) from exc
    else:
        cfg = dict(config)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise InputError(f"open_clip config for {name!r} lacks {missing}; add them to the config")
    if _REGISTERED.get(name) == cfg:
        return name
    target = _config_dir() / f"{name}.json"
    target.write_text(json.dumps(cfg))
    open_clip.add_model_config(target)
    _REGISTERED[name] = cfg
    return name


def create_clip(
    arch: str, weights_path: str | Path | None = None, device: torch.device | str = "cpu"
) -> nn.Module:
    """Build a whole open_clip CLIP (eval mode), optionally loading a safetensors/open_clip file."""
    import open_clip

    if arch not in open_clip.list_models():
        raise InputError(
            f"unknown open_clip architecture {arch!r}; use one of open_clip.list_models() "
            "or register its config first"
        )
    pretrained = None if weights_path is None else str(weights_path)
    if pretrained is not None and not Path(pretrained).is_file():
        raise InputError(f"{pretrained}: weights file not found; check the path")
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, device=device)
    except RuntimeError as exc:  # load_state_dict size/key mismatches
        raise InputError(
            f"{pretrained}: its tensors do not fit architecture {arch!r} (names or shapes differ); "
            "give weights of that architecture"
        ) from exc
    return model.eval()


def visual_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Image-tower state dict of a whole CLIP, keyed with the ``visual.`` prefix."""
    return {f"{VISUAL_PREFIX}{k}": v.detach().clone() for k, v in model.visual.state_dict().items()}


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", value))


def check_compatible(reference: Mapping[str, Any], state: Mapping[str, Any], where: Any) -> None:
    """Refuse a checkpoint of another architecture, naming the first key that does not fit.

    ``reference`` maps keys to tensors or shapes, so large models need no second allocation."""
    for key, ref in reference.items():
        if key not in state:
            raise InputError(
                f"{where}: key {key!r} (shape {_shape(ref)}) is missing; "
                "the checkpoint is not of this architecture"
            )
        if _shape(state[key]) != _shape(ref):
            raise InputError(
                f"{where}: key {key!r} has shape {_shape(state[key])} but the architecture "
                f"expects {_shape(ref)}; use a checkpoint of the same architecture"
            )
    for key, value in state.items():
        if key not in reference:
            raise InputError(
                f"{where}: unexpected key {key!r} (shape {_shape(value)}); "
                "the checkpoint is not of this architecture"
            )


def load_visual_state(visual: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy a state dict into an image tower in place (``visual.`` prefix optional)."""
    full = {(k if k.startswith(VISUAL_PREFIX) else VISUAL_PREFIX + k): v for k, v in state.items()}
    reference = {VISUAL_PREFIX + k: v for k, v in visual.state_dict().items()}
    check_compatible(reference, full, "image-tower state")
    with torch.no_grad():
        for key, target in reference.items():
            target.copy_(full[key])
    return visual


def build_visual_tower(arch: str, device: torch.device | str = "cpu") -> nn.Module:
    """A randomly initialised image tower of ``arch`` without building the text tower."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise InputError(f"unknown open_clip architecture {arch!r}; register its config first")
    visual = _build_vision_tower(
        cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=bool(cfg.get("quick_gelu", False))
    )
    return visual.to(device).eval()


def _fill(template: Any, classname: str) -> str:
    """Templates are ``"a photo of a {}."`` strings or open_clip-style callables."""
    if callable(template):
        return str(template(classname))
    return template.format(classname) if "{}" in template else f"{template} {classname}"


@torch.no_grad()
def encode_texts(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], device: torch.device | str
) -> torch.Tensor:
    """L2-normalised text embeddings [len(texts), D]."""
    tokens = tokenizer(list(texts)).to(device)
    return F.normalize(model.encode_text(tokens).float(), dim=-1)


@torch.no_grad()
def zero_shot_head(
    clip_model: nn.Module,
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Frozen head [C, D] as in Ilharco et al.: mean normalised template embedding per class,
    re-normalised, times the logit scale (so logits = normalise(image embedding) @ head.T)."""
    if not classnames or not templates:
        raise InputError("a zero-shot head needs at least one class name and one template")
    clip_model = clip_model.to(device)
    rows = []
    for name in classnames:
        texts = [_fill(t, name) for t in templates]
        rows.append(encode_texts(clip_model, tokenizer, texts, device).mean(dim=0))
    head = F.normalize(torch.stack(rows), dim=-1)
    scale = clip_model.logit_scale.exp().float()
    return (head * scale).to(device)
