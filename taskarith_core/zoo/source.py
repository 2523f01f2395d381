"""``ZooSource``: a built zoo folder seen through the :class:`ModelSource` contract.

It is a :class:`~taskarith_core.models.files.FileSource` whose files, class names, heads and data
come from the zoo folder: ``tasks.json`` (data spec, names, templates, compact vocabulary),
``config.json`` (open_clip config), ``heads.safetensors`` (zero-shot heads of theta_pre, cached at
build time so that loading needs no text tower) and one folder of checkpoints per paradigm.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import Dataset, TensorDataset

from ..errors import InputError, describe, quote
from ..io import load_state_dict
from ..models.clip import register_arch
from ..models.files import FileSource
from .arch import ARCH_NAME, CompactTokenizer, to_float
from .build import MASKED, PARADIGMS
from .data import data_spec_from_root, load_split

__all__ = ["BUILD_HINT", "PARADIGMS", "ZOO_ROOT", "ZooSource", "load_zoo", "zoo_paradigms"]

ZOO_ROOT = Path(__file__).resolve().parents[2] / "assets" / "zoo"
BUILD_HINT = "run `python -m taskarith_core zoo build`"


def _require(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: zoo asset missing; {BUILD_HINT}")
    return path


def _read_json(path: Path) -> dict:
    text = _require(path).read_text()  # a missing asset says so, not "invalid JSON"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({describe(exc)}); {BUILD_HINT}") from exc


class ZooSource(FileSource):
    """Pretrained CLIP + per-task image towers of one fine-tuning paradigm of a built zoo."""

    def __init__(self, root: str | Path = ZOO_ROOT, paradigm: str = "full"):
        if paradigm not in PARADIGMS:
            raise InputError(
                f"unknown paradigm {quote(paradigm)}: use one of {', '.join(PARADIGMS)}"
            )
        root = Path(root)
        info = _read_json(root / "tasks.json")
        have = list(info.get("paradigms", PARADIGMS))
        if paradigm not in have:
            raise InputError(
                f"{root}: this zoo has no {quote(paradigm)} checkpoints; use one of "
                f"{', '.join(have)}, or {BUILD_HINT} --paradigms {paradigm}"
            )
        arch = info.get("arch", ARCH_NAME)
        register_arch(_read_json(root / "config.json"), arch)
        tasks, control = list(info["tasks"]), info.get("control")
        folder = root / paradigm
        finetuned = {t: _require(folder / f"{t}.safetensors") for t in tasks}
        masks = None
        if paradigm in MASKED:
            masks = {t: _require(folder / f"{t}.mask.safetensors") for t in tasks}
        heads = load_state_dict(_require(root / "heads.safetensors"))
        names = {t: v["classnames"] for t, v in info["task_info"].items()}
        super().__init__(
            name=f"zoo/{paradigm}" if root == ZOO_ROOT else f"{root.name}/{paradigm}",
            arch=arch,
            pretrained=_require(root / "pretrained.safetensors"),
            finetuned=finetuned,
            classnames=names,
            data=self._data_split,
            heads=heads,
            templates={t: v["templates"] for t, v in info["task_info"].items()},
            control_task=control,
            talos_masks=masks,
            paradigm=paradigm,
        )
        self.root, self.paradigm, self.info = root, paradigm, info
        self.data_spec = data_spec_from_root(root)
        self.tokenizer = CompactTokenizer(info["vocabulary"])

    def _data_split(self, task: str, split: str) -> Dataset:
        images, labels = load_split(task, split, spec=self.data_spec)
        return TensorDataset(to_float(images), labels)

    def raw_split(self, task: str, split: str):
        """uint8 images and labels (what training uses), without normalisation."""
        self._check_task(task)
        return load_split(task, split, spec=self.data_spec)


def zoo_paradigms(root: str | Path | None = None) -> list[str]:
    """The paradigms a built zoo holds (what its ``tasks.json`` lists), in display order."""
    info = _read_json(Path(ZOO_ROOT if root is None else root) / "tasks.json")
    return [p for p in info.get("paradigms", PARADIGMS) if p in PARADIGMS]


def load_zoo(paradigm: str = "full", root: str | Path | None = None) -> ZooSource:
    """The shipped zoo (or the one at ``root``) for one fine-tuning paradigm."""
    return ZooSource(ZOO_ROOT if root is None else root, paradigm)
