"""A manifest names one pretrained CLIP, its fine-tuned checkpoints and where each task's data is.

YAML or JSON; relative paths are relative to the manifest file. Example (see
``examples/manifest.example.yaml``)::

    name: openai-vit-b-32
    arch: ViT-B-32          # any open_clip model name, or arch_config: my_arch.json
    quick_gelu: true        # OpenAI CLIP weights (all three papers) use QuickGELU
    pretrained: ckpt/ViT-B-32/open_clip_pytorch_model.bin
    trust_pickle: true      # only for .pt/.bin files you trust
    tasks:
      - name: MNIST
        checkpoint: ckpt/ViT-B-32/MNIST/finetuned.pt
        data: {format: torchvision, dataset: MNIST, root: data}
      - name: RESISC45
        checkpoint: ckpt/ViT-B-32/RESISC45/finetuned.pt
        data: {format: imagefolder, root: data/resisc45}
    control:
      name: ImageNet
      classnames_file: imagenet_classes.txt
      templates: ["a photo of a {}."]
      data: {format: imagefolder, root: data/imagenet, splits: {test: val}}

Tasks of the 8-task benchmark take their class names and templates from ``real/data``; others give
``classnames`` / ``classnames_file`` and ``templates``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, describe
from ..io import atomic_path
from ..textfile import read_text_file
from .datasets import FORMATS, DataSpec, builtin_task

__all__ = [
    "MANIFEST_PARADIGMS",
    "PAPER_ARCHS",
    "Manifest",
    "TaskSpec",
    "check_files",
    "load_manifest",
    "manifest_from_dict",
    "resolve_arch",
    "save_manifest",
    "task_paradigm",
]

#: The papers' architectures; their checkpoints are OpenAI CLIP weights, which use QuickGELU.
PAPER_ARCHS = ("ViT-B-32", "ViT-B-16", "ViT-L-14")

_TOP_KEYS = {
    "name",
    "arch",
    "arch_config",
    "quick_gelu",
    "pretrained",
    "text_weights",
    "checkpoint_format",
    "trust_pickle",
    "tasks",
    "control",
    "cache_dir",
    "paradigm",
}
_TASK_KEYS = {
    "name",
    "checkpoint",
    "data",
    "classnames",
    "classnames_file",
    "templates",
    "talos_mask",
    "format",
    "paradigm",
}
_DATA_KEYS = {f.name for f in dataclasses.fields(DataSpec)}


@dataclass
class TaskSpec:
    """One task (or the control set, which has no checkpoint)."""

    name: str
    data: DataSpec
    checkpoint: str | None = None
    classnames: list[str] | None = None
    classnames_file: str | None = None
    templates: list[str] | None = None
    talos_mask: str | None = None
    format: str | None = None
    paradigm: str | None = None  #: how its checkpoint was fine-tuned (default: the manifest's)


@dataclass
class Manifest:
    """Everything a :class:`~taskarith_core.real.source.ManifestSource` needs; paths as written."""

    name: str
    arch: str
    pretrained: str
    tasks: list[TaskSpec]
    control: TaskSpec | None = None
    quick_gelu: bool | None = None
    arch_config: str | None = None
    text_weights: str | None = None
    checkpoint_format: str = "auto"
    trust_pickle: bool = False
    cache_dir: str | None = None
    #: how the fine-tuned checkpoints were made; linearised ones are evaluated linearised
    paradigm: str = "full"
    base_dir: Path = field(default=Path("."), compare=False)

    def resolve(self, path: str) -> Path:
        """A manifest path: absolute as given, relative to the manifest's folder otherwise."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def to_dict(self) -> dict[str, Any]:
        """Plain data, ready for YAML/JSON (defaults and empty fields left out)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "base_dir"}
        out["tasks"] = [_task_dict(t) for t in self.tasks]
        out["control"] = _task_dict(self.control) if self.control else None
        return {k: v for k, v in out.items() if v is not None}


def _task_dict(task: TaskSpec) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(task).items() if v is not None}


_TYPE_WORDS = {str: "text", list: "a list", int: "a number", float: "a number", bool: "a flag"}


def _check_keys(where: str, data: Any, allowed: set[str], required: tuple[str, ...]) -> dict:
    if not isinstance(data, dict):
        raise InputError(
            f"{where}: expected a mapping of keys, found {_TYPE_WORDS.get(type(data), 'a value')}"
            "; give a manifest (see examples/manifest.example.yaml)"
        )
    # The file's own keys are never repeated (see errors.py): the position of the first unknown
    # key is enough to find it, and the allowed keys say what to write instead.
    position = next((i for i, key in enumerate(data) if key not in allowed), None)
    if position is not None:
        raise InputError(
            f"{where}: key number {position + 1} is not a manifest key; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    for key in required:
        if data.get(key) in (None, "", []):
            raise InputError(f"{where}: required key {key!r} is missing")
    return data


#: the type each field must have (str unless named here); checked before anything is built
_KINDS: dict[str, tuple[type, ...]] = {
    "quick_gelu": (bool,),
    "trust_pickle": (bool,),
    "classnames": (list,),
    "templates": (list,),
    "splits": (dict,),
    "val_fraction": (int, float),
    "test_fraction": (int, float),
    "seed": (int,),
    "tasks": (list,),
    "control": (dict,),
    "data": (dict,),
}
_KIND_WORDS = {bool: "true or false", list: "a list", dict: "a mapping", int: "a number"}


def _check_types(where: str, data: dict) -> None:
    """Every present field has its type (a list of strings where a list is expected)."""
    for key, value in data.items():
        if value is None:
            continue
        kinds = _KINDS.get(key, (str,))
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if ok and isinstance(value, list) and key != "tasks":
            ok = all(isinstance(v, str) for v in value)
        if ok and isinstance(value, dict) and key == "splits":
            ok = all(isinstance(v, str) for v in value.values())
        if not ok:
            words = _KIND_WORDS.get(kinds[0], "text")
            words += " of text" if kinds[0] is list and key != "tasks" else ""
            raise InputError(f"{where}: {key} must be {words}; fix that entry")


#: paradigms a manifest may declare (``lora``: plain LoRA adapters, merged into the weights)
MANIFEST_PARADIGMS = ("full", "attention", "talos", "linearized", "lora", "l-lora", "lota")


def _check_paradigm(where: str, value: Any) -> None:
    if value is not None and value not in MANIFEST_PARADIGMS:
        raise InputError(
            f"{where}: paradigm is not one this tool knows; use one of "
            f"{', '.join(MANIFEST_PARADIGMS)}"
        )


def task_paradigm(manifest: Manifest) -> str:
    """The one paradigm of the manifest's checkpoints (a task may repeat it, not change it: task
    vectors of different paradigms do not live in one model)."""
    for index, task in enumerate(manifest.tasks):
        if task.paradigm is not None and task.paradigm != manifest.paradigm:
            raise InputError(
                f"tasks[{index}]: paradigm differs from the manifest's paradigm; one manifest "
                "holds checkpoints of one paradigm (write one manifest per paradigm)"
            )
    return manifest.paradigm


def _data_spec(where: str, data: Any) -> DataSpec:
    data = _check_keys(f"{where}.data", data, _DATA_KEYS, ("format", "root"))
    _check_types(f"{where}.data", data)
    if data["format"] not in FORMATS:
        raise InputError(f"{where}.data.format is not a known format; use one of {FORMATS}")
    if data["format"] == "torchvision" and not data.get("dataset"):
        raise InputError(f"{where}.data: format torchvision needs dataset (e.g. MNIST)")
    return DataSpec(**data)


def _task_spec(where: str, data: Any, control: bool) -> TaskSpec:
    required = ("name", "data") if control else ("name", "checkpoint", "data")
    data = _check_keys(where, data, _TASK_KEYS, required)
    _check_types(where, data)
    _check_paradigm(where, data.get("paradigm"))
    spec = TaskSpec(**{**data, "data": _data_spec(where, data["data"])})
    spec.name = str(spec.name)
    has_names = spec.classnames or spec.classnames_file or builtin_task(spec.name)
    if not has_names and spec.data.format == "torchvision":
        raise InputError(f"{where}: this task is not a benchmark task; give classnames")
    if not (spec.templates or builtin_task(spec.name)):
        raise InputError(f"{where}: this task is not a benchmark task; give templates")
    return spec


def manifest_from_dict(data: Any, base_dir: Path, where: str = "manifest") -> Manifest:
    """Validate the structure (not the files: see :func:`check_files`)."""
    data = _check_keys(where, data, _TOP_KEYS, ("name", "arch", "pretrained", "tasks"))
    if not isinstance(data["tasks"], list):
        raise InputError(f"{where}: tasks must be a list of task entries")
    _check_types(where, data)
    _check_paradigm(where, data.get("paradigm"))
    tasks = [_task_spec(f"{where}: tasks[{i}]", t, False) for i, t in enumerate(data["tasks"])]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = next(i for i, n in enumerate(names) if n in names[:i])
        raise InputError(
            f"{where}: tasks[{dup}] has the name of an earlier task; task names must be unique"
        )
    control = data.get("control")
    fields = {k: v for k, v in data.items() if k not in ("tasks", "control")}
    if fields.get("paradigm") is None:
        fields.pop("paradigm", None)
    return Manifest(
        **fields,
        tasks=tasks,
        control=_task_spec(f"{where}: control", control, True) if control else None,
        base_dir=base_dir,
    )


def check_files(manifest: Manifest, where: str) -> None:
    """Every referenced file and folder exists; the first missing one is reported."""
    paths = [
        ("pretrained", manifest.pretrained),
        ("arch_config", manifest.arch_config),
        ("text_weights", manifest.text_weights),
    ]
    entries = [(f"tasks[{i}]", task) for i, task in enumerate(manifest.tasks)]
    entries += [("control", manifest.control)] if manifest.control else []
    for label, task in entries:
        paths += [
            (f"{label}.checkpoint", task.checkpoint),
            (f"{label}.data.root", task.data.root),
            (f"{label}.classnames_file", task.classnames_file),
            (f"{label}.talos_mask", task.talos_mask),
        ]
    for label, path in paths:
        if path is not None and not manifest.resolve(path).exists():
            raise InputError(
                f"{where}: the file named by {label} is not found (relative paths start at the "
                "manifest's folder); fix the path"
            )


def resolve_arch(manifest: Manifest) -> str:
    """The open_clip model name to build: registers ``arch_config`` and applies ``quick_gelu``.

    ``quick_gelu`` unset means: on for the papers' ViT-B-32/B-16/L-14 (OpenAI weights), the
    config's own setting otherwise. A QuickGELU variant is registered when open_clip lacks one."""
    import open_clip

    from ..models.clip import register_arch

    arch = manifest.arch
    if manifest.arch_config:
        register_arch(manifest.resolve(manifest.arch_config), arch)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise InputError(
            "the manifest's arch is not an open_clip architecture; use one of "
            "open_clip.list_models() (ViT-B-32, ViT-B-16, ViT-L-14, ...) or give arch_config"
        )
    wanted = manifest.quick_gelu if manifest.quick_gelu is not None else arch in PAPER_ARCHS
    if bool(cfg.get("quick_gelu", False)) == wanted:
        return arch
    variant = f"{arch}-quickgelu" if wanted else f"{arch}-gelu"
    if open_clip.get_model_config(variant) is None:
        register_arch({**cfg, "quick_gelu": wanted}, variant)
    return variant


def load_manifest(path: str | Path, check: bool = True) -> Manifest:
    """Read a YAML/JSON manifest; ``check`` also verifies the files and the architecture."""
    path = Path(path)
    text = read_text_file(path, "manifest")
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except RecursionError:
        raise InputError(f"{path}: is nested too deeply for a manifest; fix the file") from None
    except yaml.YAMLError as exc:
        raise InputError(
            f"{path}: is not valid YAML/JSON ({describe(exc)}); fix the syntax"
        ) from None
    manifest = manifest_from_dict(data, path.resolve().parent, str(path))
    if check:
        check_files(manifest, str(path))
        resolve_arch(manifest)
    return manifest


def save_manifest(manifest: Manifest, path: str | Path) -> Path:
    """Write YAML (or JSON when the name ends in .json) atomically."""
    path = Path(path)
    data = manifest.to_dict()
    text = (
        json.dumps(data, indent=2) + "\n"
        if path.suffix.lower() == ".json"
        else yaml.safe_dump(data, sort_keys=False)
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
