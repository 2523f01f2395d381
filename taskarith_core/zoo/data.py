"""Task data of the zoo: deterministic train / val / test splits and the pretraining mixture.

Nothing is downloaded or shipped: each split is regenerated from ``tasks.json`` (sizes and seed) in
about a second and kept in memory. Handwritten digits come from scikit-learn's ``load_digits``; its
1797 source images are divided between train / val / test so no source image crosses splits.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, describe
from .tasks import CONTROL_TASK, TASKS, draw

__all__ = [
    "DataSpec",
    "PRETRAIN_TEMPLATES",
    "check_task",
    "data_spec_from_root",
    "load_split",
    "pretrain_mixture",
    "tasks_json",
]

SPLITS = ("train", "val", "test")
#: captions of the pretraining mixture: deliberately not the evaluation templates
PRETRAIN_TEMPLATES = (
    "{}",
    "an image of {}.",
    "a picture of {}.",
    "{} on a screen.",
    "there is {}.",
)


@dataclass(frozen=True)
class DataSpec:
    """Which tasks exist, how many images each split has, and the seed that draws them."""

    tasks: tuple[str, ...] = tuple(t for t in TASKS if t != CONTROL_TASK)
    control: str = CONTROL_TASK
    sizes: dict[str, int] = field(default_factory=lambda: {"train": 3000, "val": 500, "test": 1000})
    pretrain_per_task: int = 4000  #: style-shifted images per concept family in the mixture
    caption_noise: float = 0.2  #: fraction of pretraining captions naming a wrong class
    #: extra control images (drawn apart from its splits) in the mixture: the role of the broad
    #: web data a foundation model has seen most, so the control is well learned, as ImageNet is
    pretrain_control: int = 0
    #: split sizes of the control that differ from ``sizes`` (e.g. a larger val / test: negation
    #: picks lambda by the control's accuracy, so its noise decides the choice; ImageNet's val
    #: has 50000 images). Its train split feeds the pretraining: overriding "train" changes it.
    control_sizes: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def split_size(self, task: str, split: str) -> int:
        """Images in ``task``'s ``split``: the control's own size where it has one."""
        if task == self.control and split in self.control_sizes:
            return self.control_sizes[split]
        return self.sizes[split]


def check_task(task: str, spec: DataSpec) -> None:
    if task not in spec.tasks and task != spec.control:
        known = ", ".join([*spec.tasks, spec.control])
        raise InputError(f"unknown task {task!r}: the zoo has {known}")


def _rng(spec: DataSpec, task: str, part: str) -> np.random.Generator:
    return np.random.default_rng([spec.seed, zlib.crc32(task.encode()), zlib.crc32(part.encode())])


def _balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


def _handwritten_sources(split: str, seed: int) -> np.ndarray:
    """Disjoint source images per split (70 / 10 / 20 %) so test digits were never trained on."""
    from .tasks import _sklearn_digits

    count = len(_sklearn_digits()[1])
    order = np.random.default_rng([seed, 1797]).permutation(count)
    cut1, cut2 = int(0.7 * count), int(0.8 * count)
    return {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}[split]


@lru_cache(maxsize=64)
def _generate(spec_json: str, task: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    spec = _spec_from_json(spec_json)
    n = spec.split_size(task, split)
    rng = _rng(spec, task, split)
    labels = _balanced_labels(n, len(TASKS[task].classnames), rng)
    kwargs = {"sources": _handwritten_sources(split, spec.seed)} if task == "digits" else {}
    images = draw(task, labels, rng, pretrain=False, **kwargs)
    return images, torch.from_numpy(labels)


def load_split(
    task: str, split: str, root: str | Path | None = None, spec: DataSpec | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 3, 28, 28] and int64 labels of one split (cached: do not modify).

    Sizes and seed come from ``root/tasks.json`` (a built zoo), else from ``spec`` or the default.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use train, val or test")
    if spec is None:
        spec = data_spec_from_root(root) if root is not None else DataSpec()
    check_task(task, spec)
    return _generate(_spec_to_json(spec), task, split)


def pretrain_mixture(spec: DataSpec) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Style-shifted images of every concept family plus the control's train split.

    Returns uint8 images and, per image, ``(task, label)``; captions are made from these. The
    handwritten digits have no images here: their concepts come only from shifted printed digits.
    """
    images, owners = [], []
    families = [t for t in spec.tasks if t != "digits"]
    if "digits" in spec.tasks and "printed_digits" not in families:
        families.append("printed_digits")
    for task in families:
        rng = _rng(spec, task, "pretrain")
        labels = _balanced_labels(spec.pretrain_per_task, len(TASKS[task].classnames), rng)
        images.append(draw(task, labels, rng, pretrain=True))
        owners += [(task, int(label)) for label in labels]
    control_images, control_labels = load_split(spec.control, "train", spec=spec)
    images.append(control_images)
    owners += [(spec.control, int(label)) for label in control_labels]
    if spec.pretrain_control > 0:
        rng = _rng(spec, spec.control, "pretrain")
        labels = _balanced_labels(spec.pretrain_control, len(TASKS[spec.control].classnames), rng)
        images.append(draw(spec.control, labels, rng, pretrain=True))
        owners += [(spec.control, int(label)) for label in labels]
    return torch.cat(images), owners


def _spec_to_json(spec: DataSpec) -> str:
    return json.dumps(asdict(spec), sort_keys=True)


def _spec_from_json(text: str) -> DataSpec:
    raw = json.loads(text)
    raw["tasks"] = tuple(raw["tasks"])
    return DataSpec(**raw)


def tasks_json(spec: DataSpec) -> dict:
    """What ``assets/zoo/tasks.json`` holds: the data spec and, per task, names and templates."""
    entry = {
        t: {
            "classnames": list(TASKS[t].classnames),
            "templates": list(TASKS[t].templates),
            "sizes": {split: spec.split_size(t, split) for split in spec.sizes},
        }
        for t in [*spec.tasks, spec.control]
    }
    return {
        "data_spec": asdict(spec),
        "tasks": list(spec.tasks),
        "control": spec.control,
        "task_info": entry,
    }


def data_spec_from_root(root: str | Path) -> DataSpec:
    path = Path(root) / "tasks.json"
    if not path.is_file():
        raise InputError(f"{path}: zoo asset missing; run `python -m taskarith_core zoo build`")
    try:
        raw = json.loads(path.read_text())["data_spec"]
        return _spec_from_json(json.dumps(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path}: unreadable zoo task file ({describe(exc)}); rebuild the zoo"
        ) from exc
