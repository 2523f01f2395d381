"""The one place that decides which device computations run on."""

from __future__ import annotations

import torch

from .errors import InputError

__all__ = ["pick_device"]


def pick_device(name: str | None = "auto") -> torch.device:
    """Return ``cuda`` when present, then ``mps``, else ``cpu``; an explicit name overrides."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for but no CUDA GPU is visible: use --device cpu")
    return device
