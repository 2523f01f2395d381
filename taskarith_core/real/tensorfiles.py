"""Lazy, validated views of checkpoint files and a low-fragmentation way to assemble a state dict.

The streamed protocols (:mod:`taskarith_core.real.streamed`) read every input through a
:class:`TowerView` (one tensor per index, float32 like :func:`read_visual_state`) and build each
output with :func:`assemble`; temp results go to files with :func:`write_shards`.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from ..errors import InputError
from ..io import PICKLE_SUFFIXES, save_state_dict
from ..keys import VISUAL_PREFIX
from ..models.files import read_visual_state
from ..safetensors_reader import SafetensorsFile

__all__ = [
    "TowerView",
    "as_bool",
    "assemble",
    "check_layout",
    "release_freed_memory",
    "write_shards",
]

StateDict = dict[str, torch.Tensor]
_SHARD_BYTES = 256 << 20


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    A pass over the files allocates and frees thousands of per-tensor temporaries; glibc keeps the
    freed pages (~0.7 GB after X of an L/14), which would then stack under the next merged copy."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    """What :func:`read_visual_state` does to a checkpoint's tensors (float32 for any float)."""
    return tensor.float() if tensor.is_floating_point() else tensor


def as_bool(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.bool()


class TowerView(Mapping):
    """Read-only, lazy ``visual.*`` view of one checkpoint file: a tensor is read when indexed.

    Keys follow :func:`read_visual_state` (a whole CLIP keeps its ``visual.`` tensors, a bare tower
    gets the prefix); pickles (trusted only) are loaded whole, safetensors read per tensor."""

    def __init__(self, stack: contextlib.ExitStack, path: str | Path, trust_pickle: bool,
                 convert: Callable[[torch.Tensor], torch.Tensor] = _as_float) -> None:  # fmt: skip
        self.path, self._convert = Path(path), convert
        if self.path.suffix.lower() in PICKLE_SUFFIXES:
            self._tensors: StateDict | None = read_visual_state(self.path, trust_pickle)
            self._names = {k: k for k in self._tensors}
            return
        self._tensors = None
        self._file = stack.enter_context(SafetensorsFile(self.path))
        names = self._file.keys()
        if any(n.startswith(VISUAL_PREFIX) for n in names):
            self._names = {n: n for n in names if n.startswith(VISUAL_PREFIX)}
        else:
            self._names = {f"{VISUAL_PREFIX}{n}": n for n in names}

    def is_float(self, key: str) -> bool:
        """Whether the tensor is floating point, from the header (no read)."""
        if self._tensors is not None:
            return self._tensors[key].is_floating_point()
        return self._file.dtype(self._names[key]).startswith(("F", "BF"))

    def shape(self, key: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._file.shape(self._names[key]))

    def __getitem__(self, key: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._convert(self._tensors[key])
        if key not in self._names:
            raise KeyError(key)
        return self._convert(self._file.get_tensor(self._names[key]))

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def check_layout(pre: TowerView, other: TowerView, role: str, partial: bool = False) -> None:
    """Same keys and shapes as theta_pre, read from the headers (``partial``: a subset is fine)."""
    for key in other:
        if key not in pre:
            raise InputError(f"{other.path}: {role} tensor {key!r} is not in {pre.path}")
        if other.shape(key) != pre.shape(key):
            raise InputError(
                f"{other.path}: {role} tensor {key!r} has shape {other.shape(key)} but "
                f"{pre.path} has {pre.shape(key)}; use checkpoints of one architecture"
            )
    missing = [k for k in pre if k not in other]
    if missing and not partial:
        raise InputError(f"{other.path}: {role} lacks tensor {missing[0]!r}; not of this model")


def assemble(pre: TowerView, rule: Callable[[str, torch.Tensor], torch.Tensor]) -> StateDict:
    """``rule(key, theta_pre[key])`` for every float tensor, copied into one float32 block.

    One allocation for the whole output keeps the long-lived result apart from the per-tensor
    temporaries; interleaving them in the heap cost ~0.5 GB of fragmentation at L/14 scale."""
    floats = [key for key in pre if pre.is_float(key)]
    sizes = [int(torch.Size(pre.shape(key)).numel()) for key in floats]
    block = torch.empty(sum(sizes), dtype=torch.float32)
    targets, offset = {}, 0
    for key, size in zip(floats, sizes):
        targets[key] = block[offset : offset + size].view(pre.shape(key))
        offset += size
    out: StateDict = {}
    for key in pre:
        value = pre[key]
        if key in targets:
            out[key] = targets[key].copy_(rule(key, value))
        else:
            out[key] = value.clone()
    return out


def write_shards(
    items: Iterator[tuple[str, torch.Tensor]], stem: Path, stack: contextlib.ExitStack
) -> dict[str, TowerView]:
    """Write tensors as they come into files of ~256 MB; ``key -> view`` of the file holding it."""
    files: dict[str, TowerView] = {}
    shard: StateDict = {}
    size = index = 0

    def flush() -> None:
        nonlocal shard, size, index
        path = save_state_dict(shard, stem.with_name(f"{stem.name}-{index}.safetensors"))
        view = TowerView(stack, path, False)
        files.update(dict.fromkeys(shard, view))
        shard, size, index = {}, 0, index + 1

    for key, tensor in items:
        shard[key] = tensor
        size += tensor.numel() * tensor.element_size()
        if size >= _SHARD_BYTES:
            flush()
    if shard:
        flush()
    return files
