"""``ManifestSource``: a manifest's checkpoints and local datasets as a ModelSource.

It is the model engine's :class:`~taskarith_core.models.files.FileSource` plus three things:
checkpoints of any supported format are converted once (lazily, cached on disk) into open_clip
safetensors; class names are aligned to each dataset's own label order; zero-shot heads are cached
on disk keyed by the pretrained model's hash, the architecture, the class names and the templates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..io import load_state_dict, save_state_dict
from ..keys import VISUAL_PREFIX
from ..models.cache import cache_dir, file_digest
from ..models.files import FileSource
from ..models.linearized import is_linearized
from ..progress import Progress, no_progress
from .convert import cache_name, convert_checkpoint
from .datasets import align_classnames, builtin_task, open_pools, preprocess_for, take_split
from .manifest import Manifest, TaskSpec, load_manifest, resolve_arch, task_paradigm

__all__ = ["ManifestSource", "cache_root", "load_manifest_source"]


def cache_root(manifest: Manifest | None = None) -> Path:
    """``cache_dir`` of the manifest, else the team's cache root ($TASKARITH_CACHE) + ``/real``."""
    if manifest is not None and manifest.cache_dir:
        return manifest.resolve(manifest.cache_dir)
    return cache_dir() / "real"


def _classnames_file(path: Path) -> list[str]:
    """One class name per line (blank lines ignored), or a JSON list."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return [str(n) for n in json.loads(text)]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _source_name(manifest: Manifest) -> str:
    paradigm = task_paradigm(manifest)
    return f"{manifest.name} ({paradigm})" if is_linearized(paradigm) else manifest.name


class ManifestSource(FileSource):
    """Pretrained + fine-tuned open_clip image towers and local data named by a manifest."""

    def __init__(self, manifest: Manifest, progress: Progress = no_progress) -> None:
        self.manifest = manifest
        self._specs: dict[str, TaskSpec] = {t.name: t for t in manifest.tasks}
        if manifest.control is not None:
            self._specs[manifest.control.name] = manifest.control
        super().__init__(
            # linearised checkpoints get their own name: every cache is keyed by it, and the same
            # weights evaluated linearised give other numbers than evaluated as plain weights
            name=_source_name(manifest),
            arch=resolve_arch(manifest),
            pretrained=manifest.resolve(manifest.pretrained),
            finetuned={t.name: manifest.resolve(t.checkpoint) for t in manifest.tasks},
            classnames={},
            data=self._data,
            templates={n: self._templates_of(s) for n, s in self._specs.items()},
            control_task=manifest.control.name if manifest.control else None,
            talos_masks={
                t.name: manifest.resolve(t.talos_mask) for t in manifest.tasks if t.talos_mask
            },
            trust_pickle=manifest.trust_pickle,
            paradigm=task_paradigm(manifest),
        )
        self._cache = cache_root(manifest)
        self._converted: dict[str, Path] = {}
        self._pools: dict[str, tuple[dict, list[str]]] = {}
        self._transform = None
        self._pre_hash: str | None = None
        self._progress = progress

    # -- conversion ----------------------------------------------------------------------------
    def _convert(self, key: str, raw: Path, visual_only: bool, fmt: str, fill=None) -> Path:
        if key not in self._converted:
            finetuned = key in self._specs
            # adapters and tangent files are merged onto theta_pre: its file is part of the key
            ident = f"{fmt}|{self.paradigm}|{self.pretrained_path().name}" if finetuned else fmt
            out = self._cache / "converted" / cache_name(raw, self.arch, visual_only, ident)
            if not out.is_file():
                out.parent.mkdir(parents=True, exist_ok=True)
                convert_checkpoint(
                    raw,
                    self.arch,
                    out,
                    visual_only=visual_only,
                    fmt=fmt,
                    trust_pickle=self._trust_pickle,
                    fill=fill() if fill else None,
                    base=(lambda: load_state_dict(self.pretrained_path())) if finetuned else None,
                    paradigm=self.paradigm if finetuned else None,
                )
            self._converted[key] = out
        return self._converted[key]

    def _text_fill(self) -> dict[str, torch.Tensor] | None:
        text = self.manifest.text_weights
        if text is None:
            return None
        full = self._convert("<text>", self.manifest.resolve(text), False, "auto")
        return load_state_dict(full)

    def pretrained_path(self) -> Path:
        """The whole CLIP converted to open_clip safetensors (its hash keys every cache)."""
        raw = self.manifest.resolve(self.manifest.pretrained)
        fmt = self.manifest.checkpoint_format
        return self._convert("<pretrained>", raw, False, fmt, self._text_fill)

    def finetuned_path(self, task: str) -> Path:
        self._check_task(task, allow_control=False)
        spec = self._specs[task]
        fmt = spec.format or self.manifest.checkpoint_format

        def proj() -> dict[str, torch.Tensor]:  # CLIPVisionModel files lack the projection
            return load_state_dict(self.pretrained_path(), prefix=f"{VISUAL_PREFIX}proj")

        return self._convert(task, self.manifest.resolve(spec.checkpoint), True, fmt, proj)

    def load_pretrained(self) -> dict[str, torch.Tensor]:
        self._pretrained = self.pretrained_path()
        return super().load_pretrained()

    def talos_mask_path(self, task: str) -> Path | None:
        """File of the TaLoS mask of ``task``, if any (streamed protocols read it per tensor)."""
        self._check_task(task, allow_control=False)
        return self._masks.get(task)

    # -- data ----------------------------------------------------------------------------------
    def _open(self, task: str) -> tuple[dict, list[str]]:
        if task not in self._pools:
            spec = self._specs[task]
            where = f"{self.manifest.name}: task {task!r}"
            pools, ids = open_pools(spec.data, self.manifest.base_dir, where)
            builtin = builtin_task(task) or {}
            names = spec.classnames
            if spec.classnames_file:
                names = _classnames_file(self.manifest.resolve(spec.classnames_file))
            folders = builtin.get("folders")
            if names is None:
                names = builtin.get("classnames")
            if names is not None and folders is not None and len(names) != len(folders):
                folders = None  # the manifest's own list replaces the benchmark's: count check
            self._pools[task] = (pools, align_classnames(where, ids, names, folders))
        return self._pools[task]

    def classnames(self, task: str) -> list[str]:
        self._check_task(task)
        return list(self._open(task)[1])

    def _data(self, task: str, split: str) -> Dataset:
        if self._transform is None:
            self._transform = preprocess_for(self.arch)
        pools, _ = self._open(task)
        return take_split(pools, split, self._specs[task].data, self._transform)

    @staticmethod
    def _templates_of(spec: TaskSpec) -> list[str]:
        return list(spec.templates or (builtin_task(spec.name) or {}).get("templates") or [])

    # -- heads ---------------------------------------------------------------------------------
    def _head_path(self, task: str) -> Path:
        if self._pre_hash is None:
            self._pre_hash = file_digest(self.pretrained_path())
        key = json.dumps(
            [self._pre_hash, self.arch, self.classnames(task), self._task_templates(task)]
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self._cache / "heads" / f"{digest}.safetensors"

    def build_heads(self, tasks: Sequence[str], device: torch.device | str = "cpu") -> None:
        """Heads from the disk cache; missing ones built with one text-tower load, then saved."""
        for task in tasks:
            path = self._head_path(task)
            if task not in self._heads and path.is_file():
                self._heads[task] = load_state_dict(path)["head"]
        missing = [t for t in tasks if t not in self._heads]
        if not missing:
            return
        self._pretrained = self.pretrained_path()
        super().build_heads(missing, device)
        for task in missing:
            path = self._head_path(task)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_state_dict({"head": self._heads[task]}, path, metadata={"task": task})

    def prepare(self, device: torch.device | str = "cpu") -> None:
        """Convert every checkpoint and build every head now (the CLI's ``convert`` step)."""
        every = self.tasks + ([self.control_task] if self.control_task else [])
        total = len(self.tasks) + 2
        self.pretrained_path()
        self._progress(1, total, "pretrained")
        for index, task in enumerate(self.tasks):
            self.finetuned_path(task)
            self._progress(index + 2, total, task)
        self.build_heads(every, device)
        self._progress(total, total, "heads")


def load_manifest_source(
    path: str | Path, progress: Progress = no_progress, trust_pickle: bool = False
) -> ManifestSource:
    """Read, check and wrap a manifest (no conversion happens until a checkpoint is needed).

    ``trust_pickle`` (the CLI's --trust-pickle) adds to the manifest's own ``trust_pickle``."""
    manifest = load_manifest(path)
    manifest.trust_pickle = manifest.trust_pickle or trust_pickle
    if not manifest.tasks:
        raise InputError(f"{path}: the manifest lists no task; add at least one")
    return ManifestSource(manifest, progress)
