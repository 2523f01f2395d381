"""Local task data: torchvision datasets (``download=False``) or ImageFolder trees, never downloads.

The 8-task benchmark's class names and prompt templates live in ``real/data/<task>.json`` (written
from the datasets' documented class lists). ``folders`` there are the datasets' own class ids; the
class names are what the prompts say. A dataset's label order is its own: class names are aligned
to the ids the dataset reports, and a folder whose classes differ from the list is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from ..errors import InputError, describe

__all__ = [
    "BENCHMARK_TASKS",
    "DATA_DIR",
    "DataSpec",
    "align_classnames",
    "builtin_task",
    "open_pools",
    "preprocess_for",
    "split_indices",
    "take_split",
]

DATA_DIR = Path(__file__).parent / "data"
BENCHMARK_TASKS = ("SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD")
FORMATS = ("imagefolder", "torchvision")
#: torchvision class -> keyword arguments of each native split (None: one pool, split here).
_NATIVE: dict[str, dict[str, dict[str, Any]] | None] = {
    "MNIST": {"train": {"train": True}, "test": {"train": False}},
    "SVHN": {"train": {"split": "train"}, "test": {"split": "test"}},
    "GTSRB": {"train": {"split": "train"}, "test": {"split": "test"}},
    "StanfordCars": {"train": {"split": "train"}, "test": {"split": "test"}},
    "DTD": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "EuroSAT": None,
    "SUN397": None,
}
#: torchvision datasets without class-name attributes: their ids are the label numbers.
_NUMBERED = {"MNIST": [str(i) for i in range(10)], "SVHN": [str(i) for i in range(10)]}
_NUMBERED["GTSRB"] = [f"{i:05d}" for i in range(43)]


@dataclass
class DataSpec:
    """Where one task's images are: ``root`` and either an ImageFolder layout or a torchvision name.

    ImageFolder: ``root/<splits[split]>/<class>/<image>``; a missing val folder is held out of train
    (``val_fraction``); a single pool (no train and test) is split into all three with ``seed``."""

    format: str
    root: str
    dataset: str | None = None
    splits: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "val": "val", "test": "test"}
    )
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0


@cache
def builtin_task(name: str) -> dict[str, Any] | None:
    """Class names, dataset class ids and templates of a benchmark task (case-insensitive)."""
    if not name.replace("_", "").replace("-", "").isalnum():
        return None  # only plain names: a task name never becomes a path outside DATA_DIR
    path = DATA_DIR / f"{name.lower()}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def preprocess_for(arch: str) -> Callable:
    """open_clip's evaluation transform for ``arch`` (resize, centre crop, CLIP normalisation)."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise InputError(f"unknown open_clip architecture {arch!r}; register its config first")
    pre = cfg.get("preprocess_cfg", {})
    return open_clip.image_transform(
        cfg["vision_cfg"].get("image_size", 224),
        is_train=False,
        mean=pre.get("mean", OPENAI_DATASET_MEAN),
        std=pre.get("std", OPENAI_DATASET_STD),
        resize_mode=pre.get("resize_mode"),
        interpolation=pre.get("interpolation"),
    )


def _norm(name: str) -> str:
    """Compare class ids loosely: ``AnnualCrop`` = ``annual_crop`` = ``annual crop``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name))
    return re.sub(r"[\s_\-/]+", " ", spaced.lower()).strip()


def align_classnames(
    where: str,
    dataset_ids: Sequence[str],
    classnames: Sequence[str] | None,
    folders: Sequence[str] | None,
) -> list[str]:
    """Class names in the dataset's label order, or a one-line error at the first disagreement."""
    ids = [str(i) for i in dataset_ids]
    if folders is None:
        if classnames is None:
            return [i.replace("_", " ") for i in ids]
        if len(classnames) != len(ids):
            raise InputError(
                f"{where}: the dataset has {len(ids)} classes but the class list has "
                f"{len(classnames)}; fix the classnames or the data folder"
            )
        return list(classnames)
    names = list(classnames) if classnames is not None else list(folders)
    lookup = {_norm(f): n for f, n in zip(folders, names)}
    for class_id in ids:
        if _norm(class_id) not in lookup:
            raise InputError(
                f"{where}: the dataset has class {class_id!r}, which the task's class list does "
                "not have; point root at the right dataset or give classnames in the manifest"
            )
    if len(ids) != len(folders):
        missing = next(f for f in folders if _norm(f) not in {_norm(i) for i in ids})
        raise InputError(
            f"{where}: the dataset has {len(ids)} classes but the task has {len(folders)} "
            f"(no folder for {missing!r}); point root at the complete dataset"
        )
    return [lookup[_norm(i)] for i in ids]


class _Transformed(Dataset):
    """``(transform(image), int label)`` over a dataset that yields ``(PIL image, label)``."""

    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), int(label)


def _imagefolder_pools(spec: DataSpec, root: Path, where: str) -> tuple[dict, list[str]]:
    from torchvision.datasets import ImageFolder

    pools, ids = {}, None
    for split, sub in spec.splits.items():
        folder = root / sub
        if folder.is_dir():
            pools[split] = ImageFolder(str(folder))
            if ids is not None and pools[split].classes != ids:
                raise InputError(
                    f"{where}: {folder} has other class folders than the other splits; "
                    "every split must hold the same classes"
                )
            ids = pools[split].classes
    if not pools:
        try:
            pools["whole"] = ImageFolder(str(root))
        except (FileNotFoundError, RuntimeError) as exc:
            raise InputError(
                f"{where}: {root} is not an ImageFolder tree ({describe(exc)})"
            ) from exc
        ids = pools["whole"].classes
    return pools, list(ids or [])


def _torchvision_pools(spec: DataSpec, root: Path, where: str) -> tuple[dict, list[str]]:
    import torchvision.datasets as tvd

    name = spec.dataset or ""
    if name not in _NATIVE:
        raise InputError(
            f"{where}: torchvision dataset {name!r} is not supported; use one of "
            f"{', '.join(_NATIVE)} or an imagefolder layout"
        )
    cls = getattr(tvd, name)
    native = _NATIVE[name] or {"whole": {}}
    pools = {}
    for split, kwargs in native.items():
        try:
            pools[split] = cls(root=str(root), download=False, **kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            raise InputError(
                f"{where}: torchvision {name} not found under {root} ({describe(exc)}); put the "
                "extracted files there (nothing is downloaded)"
            ) from exc
    first = next(iter(pools.values()))
    ids = _NUMBERED.get(name) or [str(c) for c in first.classes]
    return pools, ids


def open_pools(spec: DataSpec, base_dir: Path, where: str) -> tuple[dict[str, Dataset], list]:
    """The dataset's native pools (``train``/``val``/``test`` or one ``whole``), its class ids."""
    if spec.format not in FORMATS:
        raise InputError(f"{where}: data format {spec.format!r} unknown; use one of {FORMATS}")
    root = Path(spec.root) if Path(spec.root).is_absolute() else base_dir / spec.root
    if not root.is_dir():
        raise InputError(f"{where}: data folder {root} not found; check data.root")
    if spec.format == "imagefolder":
        return _imagefolder_pools(spec, root, where)
    return _torchvision_pools(spec, root, where)


def split_indices(n: int, first: float, second: float, seed: int) -> tuple[list, list, list]:
    """Deterministic disjoint index sets of sizes ~first*n, ~second*n and the rest."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    a, b = round(n * first), round(n * second)
    return sorted(order[:a]), sorted(order[a : a + b]), sorted(order[a + b :])


def take_split(
    pools: dict[str, Dataset], split: str, spec: DataSpec, transform: Callable
) -> Dataset:
    """One split: native when the dataset has it, else held out deterministically (``seed``)."""
    if "train" in pools and "test" in pools:
        if split == "test" or (split == "val" and "val" in pools):
            return _Transformed(pools[split], transform)
        if split == "train" and "val" in pools:
            return _Transformed(pools["train"], transform)
        n = len(pools["train"])  # type: ignore[arg-type]
        val, _, train = split_indices(n, spec.val_fraction, 0.0, spec.seed)
        return _Transformed(Subset(pools["train"], val if split == "val" else train), transform)
    pool = pools.get("whole") or pools.get("test") or next(iter(pools.values()))
    test, val, train = split_indices(len(pool), spec.test_fraction, spec.val_fraction, spec.seed)
    chosen = {"test": test, "val": val, "train": train}[split]
    return _Transformed(Subset(pool, chosen), transform)
