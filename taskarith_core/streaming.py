"""Merge, negate and build masks straight from files, one tensor name at a time.

Every input is opened lazily (:class:`SafetensorsFile`: plain reads, no mmap); for each tensor name
the driver reads that tensor from every file, applies the registered per-tensor rule and keeps only
the result, so peak memory is about N times the largest tensor plus the output -- not N models.
Layouts are checked from the headers before any arithmetic, and the output is written to a temp
file and renamed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import InputError, describe
from .fusion import MERGE_METHODS, NEGATION_METHODS, MethodSpec, check_params
from .io import (
    PICKLE_SUFFIXES,
    atomic_path,
    check_finite,
    check_writable,
    load_state_dict,
    save_state_dict,
)
from .masks import flatten_masks, selection_rates, sta_fusion_masks_for_tensor
from .progress import Progress, no_progress
from .safetensors_reader import SafetensorsFile

__all__ = ["TensorFile", "open_tensor_files", "stream_masks", "stream_merge", "stream_negate"]


_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class TensorFile:
    """Lazy, validated access to one file's tensors (safetensors, or a trusted pickle in memory)."""

    def __init__(
        self, path: str | Path, handle: Any = None, tensors: dict | None = None, prefix: str = ""
    ) -> None:
        self.path, self._handle, self._tensors, self.prefix = Path(path), handle, tensors, prefix

    def keys(self) -> list[str]:
        names = self._handle.keys() if self._handle is not None else self._tensors.keys()
        return [n[len(self.prefix) :] for n in names if n.startswith(self.prefix)]

    def shape(self, key: str) -> tuple[int, ...]:
        if self._handle is not None:
            return self._handle.shape(self.prefix + key)
        return tuple(self._tensors[self.prefix + key].shape)

    def dtype(self, key: str) -> str:
        if self._handle is not None:
            return self._handle.dtype(self.prefix + key)
        return _SAFETENSORS_DTYPES.get(self._tensors[self.prefix + key].dtype, "OTHER")

    def get(self, key: str, check: bool = True, reuse: bool = False) -> torch.Tensor:
        """One tensor, refused if it holds NaN/inf unless ``check`` is False; ``reuse``: see
        :meth:`SafetensorsFile.get_tensor` (valid until the next reused read of this file)."""
        try:
            if self._handle is not None:
                tensor = self._handle.get_tensor(self.prefix + key, reuse=reuse)
            else:
                tensor = self._tensors[self.prefix + key]
        except Exception as exc:  # safetensors reports truncation lazily, as various errors
            raise InputError(
                f"{self.path}: a tensor is truncated or corrupt ({describe(exc)}); re-export it"
            ) from exc
        if check:
            check_finite(key, tensor, self.path)
        return tensor


@contextlib.contextmanager
def open_tensor_files(
    paths: Sequence[str | Path], trust_pickle: bool = False
) -> Iterator[list[TensorFile]]:
    """Open every input lazily; pickles are loaded whole, and only when trusted."""
    with contextlib.ExitStack() as stack:
        files = []
        for path in paths:
            if Path(path).suffix.lower() in PICKLE_SUFFIXES:
                files.append(
                    TensorFile(path, tensors=load_state_dict(path, trust_pickle=trust_pickle))
                )
            else:
                files.append(TensorFile(path, handle=stack.enter_context(SafetensorsFile(path))))
        yield files


def _check_layout(ref: TensorFile, other: TensorFile, role: str, same_dtype: bool) -> None:
    ref_keys, other_keys = ref.keys(), set(other.keys())
    for key in ref_keys:
        if key not in other_keys:
            raise InputError(
                f"{other.path}: {role} lacks tensor {key!r} that {ref.path} has; "
                "all files must come from the same architecture"
            )
        if other.shape(key) != ref.shape(key):
            raise InputError(
                f"{other.path}: tensor {key!r} has shape {other.shape(key)} but "
                f"{ref.path} has {ref.shape(key)}; use checkpoints of one architecture"
            )
        if same_dtype and other.dtype(key) != ref.dtype(key):
            raise InputError(
                f"{other.path}: tensor {key!r} is {other.dtype(key)} but {ref.path} is "
                f"{ref.dtype(key)}; convert both to one dtype"
            )
    extra = other_keys - set(ref_keys)
    if extra:
        raise InputError(
            f"{other.path}: tensor {sorted(extra)[0]!r} is not in {ref.path}; "
            "all files must come from the same architecture"
        )


def _is_float(file: TensorFile, key: str) -> bool:
    return file.dtype(key).startswith(("F", "BF"))


def _side_files(files: list[TensorFile], n: int, role: str) -> list[TensorFile]:
    """One side file per task, or a single combined ``masks`` file split by its task prefixes."""
    if len(files) == n:
        return files
    if len(files) == 1 and n > 1:
        with SafetensorsFile(files[0].path) as handle:
            meta = handle.metadata()
        tasks = json.loads(meta.get("tasks", "[]"))
        if len(tasks) == n:
            return [
                TensorFile(files[0].path, files[0]._handle, files[0]._tensors, f"{t}/")
                for t in tasks
            ]
    raise InputError(f"give one {role} file per fine-tuned model ({n}), got {len(files)}")


def _run(pre: TensorFile, progress: Progress, rule) -> dict:
    keys = pre.keys()
    out = {}
    for index, key in enumerate(keys):
        out[key] = rule(key).to("cpu")
        progress(index + 1, len(keys), key)
    return out


def _one(file: TensorFile, key: str, device) -> dict[str, torch.Tensor]:
    return {key: file.get(key).to(device)}


def stream_merge(
    method: str,
    pretrained: str | Path,
    finetuned: Sequence[str | Path],
    out: str | Path,
    *,
    importances: Sequence[str | Path] = (),
    masks: Sequence[str | Path] = (),
    params: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    trust_pickle: bool = False,
    progress: Progress = no_progress,
) -> Path:
    """File-based :func:`taskarith_core.fusion.merge` with bounded memory."""
    if len(finetuned) < 2:
        raise InputError(f"a merge needs at least 2 fine-tuned models, got {len(finetuned)}")
    full = check_params(method, params or {}, len(finetuned))
    spec = MERGE_METHODS[method]
    check_writable(out)
    if spec.needs == "adaptation":
        raise InputError(
            f"method {method!r} learns its coefficients on unlabeled test images through the "
            "model, which checkpoint files alone do not give; run it on a model source (the "
            "page, `run --config`, sweeps or reproduce)"
        )
    side_paths = {"importances": importances, "masks": masks}.get(spec.needs or "", ())
    if spec.needs and not side_paths:
        raise InputError(f"method {method!r} needs --{spec.needs} (one file per fine-tuned model)")
    with open_tensor_files([pretrained, *finetuned, *side_paths], trust_pickle) as files:
        pre, fts = files[0], files[1 : 1 + len(finetuned)]
        for ft in fts:
            _check_layout(pre, ft, "fine-tuned model", same_dtype=True)
        sides = (
            _side_files(files[1 + len(finetuned) :], len(fts), spec.needs or "")
            if spec.needs
            else []
        )
        for side in sides:
            _check_layout(pre, side, spec.needs or "", same_dtype=False)
        result = _merge_opened(spec, full, pre, fts, sides, device, progress)
    return save_state_dict(result, out, metadata={"method": method, "params": json.dumps(full)})


def _merge_opened(
    spec: MethodSpec,
    full: Mapping[str, Any],
    pre: TensorFile,
    fts: list[TensorFile],
    sides: list[TensorFile],
    device: torch.device | str,
    progress: Progress,
) -> dict[str, torch.Tensor]:
    """The merged state dict of opened, checked files (a method's own engine when it has one)."""
    if spec.streamer is not None and torch.device(device).type == "cpu":
        # a combined side file (one handle, task prefixes) cannot lend one reused buffer per task
        reuse = len({id(s._handle) for s in sides}) == len(sides)
        views = [_LazyState(s, reuse=reuse) for s in sides]
        engine = spec.streamer(_LazyState(pre), [_LazyState(f) for f in fts], full, views)
        result = _run(pre, progress, engine.merged)
        engine.finish(result)  # before anything is written: the output is exact or absent
        return result
    extra = {
        name: fn(_LazyState(pre), [_LazyState(f) for f in fts], full)
        for name, fn in spec.global_stats.items()
    }

    def rule(key: str) -> torch.Tensor:
        if not _is_float(pre, key):
            return pre.get(key)
        kwargs = {**full, **extra}
        if spec.needs:
            kwargs[spec.needs] = [_one(s, key, device) for s in sides]
        merged = spec.fn(_one(pre, key, device), [_one(f, key, device) for f in fts], **kwargs)
        return merged[key]

    return _run(pre, progress, rule)


def stream_negate(
    method: str,
    pretrained: str | Path,
    finetuned: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    importance: str | Path | None = None,
    params: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    trust_pickle: bool = False,
    progress: Progress = no_progress,
) -> Path:
    """File-based :func:`taskarith_core.fusion.negate`; ``base`` defaults to theta_pre."""
    full = check_params(method, params or {}, 1, negation=True)
    spec = NEGATION_METHODS[method]
    check_writable(out)
    if spec.needs and importance is None:
        raise InputError(f"negation method {method!r} needs --importance for the task")
    paths = [pretrained, finetuned, base or pretrained] + ([importance] if spec.needs else [])
    with open_tensor_files(paths, trust_pickle) as files:
        pre, ft, base_file = files[:3]
        _check_layout(pre, ft, "fine-tuned model", same_dtype=True)
        _check_layout(pre, base_file, "base model", same_dtype=True)
        if spec.needs:
            _check_layout(pre, files[3], "importance", same_dtype=False)

        def rule(key: str) -> torch.Tensor:
            if not _is_float(pre, key):
                return base_file.get(key)
            kwargs = dict(full)
            if spec.needs:
                kwargs[spec.needs] = _one(files[3], key, device)
            edited = spec.fn(
                _one(base_file, key, device),
                _one(pre, key, device),
                _one(ft, key, device),
                **kwargs,
            )
            return edited[key]

        result = _run(pre, progress, rule)
    return save_state_dict(result, out, metadata={"method": method, "params": json.dumps(full)})


def stream_masks(
    pretrained: str | Path,
    finetuned: Sequence[str | Path],
    importances: Sequence[str | Path],
    out: str | Path,
    *,
    p: float,
    task_names: Sequence[str] | None = None,
    rates_csv: str | Path | None = None,
    device: torch.device | str = "cpu",
    trust_pickle: bool = False,
    progress: Progress = no_progress,
):
    """STA crossmasking masks of every task, saved in one file (``<task>/<tensor>``) + rates."""
    check_params("sta", {"p": p}, len(finetuned))
    if len(finetuned) < 2:
        raise InputError(f"STA masks need at least 2 fine-tuned models, got {len(finetuned)}")
    if len(importances) != len(finetuned):
        raise InputError(
            f"give one --importance file per fine-tuned model ({len(finetuned)}), "
            f"got {len(importances)}"
        )
    names = list(task_names or [Path(f).stem for f in finetuned])
    if len(set(names)) != len(names):
        raise InputError(f"task names {names} are not unique; rename the fine-tuned files")
    check_writable(out)
    if rates_csv is not None:
        check_writable(rates_csv)
    with open_tensor_files([pretrained, *finetuned, *importances], trust_pickle) as files:
        pre = files[0]
        for f in files[1 : 1 + len(finetuned)]:
            _check_layout(pre, f, "fine-tuned model", same_dtype=True)
        imps = files[1 + len(finetuned) :]
        for f in imps:
            _check_layout(pre, f, "importance", same_dtype=False)
        masks: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
        keys = [k for k in pre.keys() if _is_float(pre, k)]
        for index, key in enumerate(keys):
            per_task = sta_fusion_masks_for_tensor([f.get(key).to(device) for f in imps], p)
            for name, mask in zip(names, per_task):
                masks[name][key] = mask.cpu()
            progress(index + 1, len(keys), key)
    rates = selection_rates(masks)
    meta = {"p": str(p), "tasks": json.dumps(names)}
    if rates_csv is not None:
        with atomic_path(rates_csv) as tmp:
            rates.to_csv(tmp, index=False)
    save_state_dict(flatten_masks(masks), out, metadata=meta)
    return rates


class _LazyState(Mapping):
    """A read-only mapping view over a TensorFile, for global statistics computed in one pass."""

    def __init__(self, file: TensorFile, reuse: bool = True) -> None:
        self._file, self._reuse = file, reuse

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._file.get(key)

    def peek(self, key: str) -> torch.Tensor:
        """Unchecked, in a buffer the next ``peek`` overwrites: for a caller that uses the tensor
        at once and validates it itself (the TIES engine checks finiteness by its histograms)."""
        return self._file.get(key, check=False, reuse=self._reuse)

    def __iter__(self):
        return iter(self._file.keys())

    def __len__(self) -> int:
        return len(self._file.keys())
