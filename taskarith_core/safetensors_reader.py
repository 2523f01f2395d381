"""Plain-I/O safetensors reading and writing for streaming over many large files.

``safe_open`` memory-maps the whole file, and every page it touches stays in the process's resident
set while the file is open: streaming over N checkpoints would show N models of RSS although only
one tensor per file is in use. This reader parses the documented format (8-byte little-endian header
length, JSON header, raw little-endian data) and ``readinto``s one tensor at a time. It also checks
every offset against the file size up front, so truncation is reported before any work.
:func:`write_safetensors` writes tensor by tensor, without first building the whole file in memory.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

from .errors import InputError, describe

__all__ = ["DTYPES", "SafetensorsFile", "write_safetensors"]

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsFile:
    """Lazy reader: header parsed and validated on open; ``get_tensor`` reads one tensor."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: file not found; check the path")
        self._handle = open(self.path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self._reused: torch.Tensor | None = None
        try:
            self._entries, self._metadata, self._data_start = self._read_header()
        except Exception:
            self._handle.close()
            raise

    def _bad(self, why: str) -> InputError:
        return InputError(f"{self.path}: is not a valid .safetensors file ({why}); re-export it")

    def _read_header(self):
        size = self.path.stat().st_size
        prefix = self._handle.read(8)
        if len(prefix) < 8:
            raise self._bad("shorter than its 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, _MAX_HEADER):
            raise self._bad(f"header length {length} exceeds the file")
        try:
            header = json.loads(self._handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._bad(f"header is not JSON: {describe(exc)}") from exc
        if not isinstance(header, dict):
            raise self._bad("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        data_size = size - 8 - length
        entries = {}
        for name, info in header.items():
            try:
                dtype, shape, (start, end) = (
                    DTYPES[info["dtype"]],
                    info["shape"],
                    info["data_offsets"],
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise self._bad("a tensor has a malformed header entry") from exc
            expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if end - start != expected or start < 0:
                raise self._bad("a tensor's byte range does not match its shape")
            if end > data_size:
                raise InputError(
                    f"{self.path}: is truncated (a tensor ends at byte {end} of "
                    f"{data_size}); re-export or re-download it"
                )
            entries[name] = (info["dtype"], tuple(shape), start, end)
        return entries, metadata, 8 + length

    def keys(self) -> list[str]:
        return list(self._entries)

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> str:
        """safetensors dtype name, e.g. ``F32``."""
        return self._entries[name][0]

    def get_tensor(self, name: str, reuse: bool = False) -> torch.Tensor:
        """One tensor, in fresh memory; with ``reuse`` in a buffer the next such call overwrites.

        Reusing one buffer spares a large allocation (and its page faults) per tensor when the
        caller only needs the tensor until it reads the next one from this file.
        """
        dtype_name, shape, start, end = self._entries[name]
        dtype = DTYPES[dtype_name]
        if end == start:
            return torch.empty(shape, dtype=dtype)
        if reuse:
            if self._reused is None or self._reused.numel() < end - start:
                self._reused = torch.empty(end - start, dtype=torch.uint8)
            buffer = memoryview(self._reused.numpy())[: end - start]
        else:
            buffer = bytearray(end - start)
        self._handle.seek(self._data_start + start)
        if self._handle.readinto(buffer) != len(buffer):
            raise InputError(f"{self.path}: is truncated inside tensor {name!r}; re-export it")
        if reuse:
            return self._reused[: end - start].view(dtype).reshape(shape)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def write_safetensors(
    state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``state`` in the safetensors format, one tensor's bytes at a time."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for tensor in state.values():
            if tensor.numel():
                data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                handle.write(memoryview(data.numpy()))
