"""Reading and writing state dicts safely.

safetensors is the on-disk format. Pickle-based files (``.pt``/``.pth``/``.bin``/``.ckpt``) are
refused unless the caller passes ``trust_pickle=True``, and even then load
with ``weights_only=True``.
Every output goes to a temporary file in the target folder and is renamed into place, so a failure
never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import InputError, describe

__all__ = [
    "PICKLE_SUFFIXES",
    "atomic_path",
    "check_finite",
    "check_finite_number",
    "check_writable",
    "file_sha256",
    "load_state_dict",
    "make_folder",
    "open_safetensors",
    "refuse_torchscript",
    "save_state_dict",
    "tensor_names",
]

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise InputError(f"{path}: is not a file; give the path of a .safetensors file")


def refuse_torchscript(path: Path) -> None:
    """torch.load hands TorchScript archives to torch.jit.load even with weights_only=True, which
    runs the archive's TorchScript code: refuse them before any load."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        if any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist()):
            raise InputError(
                f"{path}: is a TorchScript archive (e.g. OpenAI's original release), which is not "
                "loaded here; load it with open_clip and save its state_dict() to safetensors"
            )


def _load_pickle(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if not trust_pickle:
        raise InputError(
            f"{path}: is a pickle file, which can run arbitrary code when loaded; convert it to "
            ".safetensors or pass --trust-pickle if you trust its source"
        )
    refuse_torchscript(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        # torch's text suggests weights_only=False, which would run the file's code: not passed on
        raise InputError(
            f"{path}: could not be loaded as a plain state dict ({describe(exc)}); it holds more "
            "than tensors: re-save its state_dict() to .safetensors where you trust it"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: does not hold a flat name -> tensor state dict")
    return {str(k): v for k, v in obj.items()}


def open_safetensors(path: str | Path):
    """Open a safetensors file lazily; corrupt or truncated files raise :class:`InputError`."""
    path = Path(path)
    _require_file(path)
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"{path}: is not a valid .safetensors file ({describe(exc)}); re-export or "
            "re-download it"
        ) from exc


def tensor_names(path: str | Path) -> list[str]:
    """Names of the tensors in a safetensors file, without loading them."""
    with open_safetensors(path) as handle:
        return list(handle.keys())


def load_state_dict(
    path: str | Path, *, trust_pickle: bool = False, prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Load a whole state dict from disk (optionally only the keys starting with ``prefix``)."""
    path = Path(path)
    _require_file(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        state = _load_pickle(path, trust_pickle)
    else:
        state = {}
        with open_safetensors(path) as handle:
            try:
                for name in handle.keys():
                    if prefix is None or name.startswith(prefix):
                        state[name] = handle.get_tensor(name)
            except (SafetensorError, OSError, ValueError) as exc:
                raise InputError(
                    f"{path}: is truncated or corrupt ({describe(exc)}); re-export it"
                ) from exc
    if prefix is not None and not state:
        raise InputError(f"{path}: holds no tensor whose name starts with {prefix!r}")
    return state


def check_finite(name: str, tensor: torch.Tensor, source: str | Path) -> None:
    """Refuse NaN or inf: a merge of them silently poisons every output tensor."""
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
        return  # a finite sum means no NaN / inf (one cheap pass); else check exactly
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(
            f"{source}: tensor {name!r} contains NaN or inf; fix or re-export the file"
        )


def _existing_ancestor(folder: Path) -> Path:
    """The nearest folder on the way up that exists (missing folders are created on writing)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: str | Path) -> Path:
    """Fail early, before any work, when the output cannot be written.

    Missing parent folders are fine (they are created when the output is written), as long as
    the nearest existing one is a writable folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        raise InputError(f"{path}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder {existing} is not writable; choose another --out")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name for the output")
    return path


def make_folder(folder: str | Path) -> Path:
    """Create an output folder and its parents, or say in one line why that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{folder}: the output folder cannot be created ({describe(exc)}); choose another"
        ) from exc
    return folder


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = check_writable(path)
    make_folder(path.parent if str(path.parent) else Path("."))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_state_dict(
    state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict as safetensors atomically, streaming tensor by tensor to the file."""
    from .safetensors_reader import write_safetensors

    with atomic_path(path) as tmp:
        write_safetensors(state, tmp, metadata)
    return Path(path)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Content hash used in cache keys, so a changed checkpoint never reuses stale results."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_finite_number(name: str, value: float) -> float:
    """A hyperparameter that is NaN or inf is always a typo."""
    if not math.isfinite(value):
        raise InputError(f"{name}={value} is not a finite number; give a real value")
    return value
