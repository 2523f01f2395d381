"""A :class:`~taskarith_core.models.source.ModelSource` over checkpoint files and a data callback.

The zoo, a user's manifest and the tests' tiny source differ only in where files and images come
from, so they can all be this one class: weights are read from safetensors (pickles only when the
user trusts them), every fine-tuned checkpoint is checked against the pretrained image tower's keys
and shapes, and heads come from a given table or are built once from the text tower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import InputError
from ..io import load_state_dict
from ..keys import VISUAL_PREFIX
from .clip import (
    build_visual_tower,
    check_compatible,
    create_clip,
    load_visual_state,
    zero_shot_head,
)
from .linearized import LinearizedTower, is_linearized
from .source import SPLITS

__all__ = ["DataFn", "FileSource", "read_visual_state"]

#: ``data(task, split) -> Dataset`` of ``(preprocessed image [3, H, W], int label)``.
DataFn = Callable[[str, str], Dataset]


def read_visual_state(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Image-tower tensors of a checkpoint (whole CLIP or tower only), ``visual.`` keys, float32."""
    state = load_state_dict(path, trust_pickle=trust_pickle)
    if any(k.startswith(VISUAL_PREFIX) for k in state):
        state = {k: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}
    else:
        state = {f"{VISUAL_PREFIX}{k}": v for k, v in state.items()}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


class FileSource:
    """Pretrained + per-task checkpoints on disk, task data from a callback, heads in memory."""

    def __init__(
        self,
        *,
        name: str,
        arch: str,
        pretrained: str | Path,
        finetuned: Mapping[str, str | Path],
        classnames: Mapping[str, Sequence[str]],
        data: DataFn,
        heads: Mapping[str, torch.Tensor] | None = None,
        templates: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        control_task: str | None = None,
        talos_masks: Mapping[str, str | Path] | None = None,
        trust_pickle: bool = False,
        tokenizer: Callable[..., torch.Tensor] | None = None,
        paradigm: str = "full",
    ) -> None:
        self.name = name
        #: how the checkpoints were fine-tuned; linearised ones are evaluated linearised
        self.paradigm = paradigm
        self.arch = arch
        self.tasks = list(finetuned)
        self.control_task = control_task
        self._pretrained = Path(pretrained)
        self._finetuned = {t: Path(p) for t, p in finetuned.items()}
        self._classnames = {t: list(c) for t, c in classnames.items()}
        self._data = data
        self._heads = {t: h.detach().float().cpu() for t, h in (heads or {}).items()}
        self._templates = templates
        self._masks = {t: Path(p) for t, p in (talos_masks or {}).items()}
        self._trust_pickle = trust_pickle
        self._shapes: dict[str, torch.Size] | None = None
        self.tokenizer = tokenizer  #: None: open_clip's tokenizer of ``arch``

    # -- names ---------------------------------------------------------------------------------
    def _check_task(self, task: str, allow_control: bool = True) -> None:
        known = self.tasks + ([self.control_task] if allow_control and self.control_task else [])
        if task not in known:
            raise InputError(f"unknown task {task!r} in {self.name}; choose one of {known}")

    def pretrained_path(self) -> Path:
        return self._pretrained

    def finetuned_path(self, task: str) -> Path:
        self._check_task(task, allow_control=False)
        return self._finetuned[task]

    # -- weights -------------------------------------------------------------------------------
    def load_pretrained(self) -> dict[str, torch.Tensor]:
        state = read_visual_state(self._pretrained, self._trust_pickle)
        if self._shapes is None:
            reference = build_visual_tower(self.arch).state_dict()
            check_compatible(
                {f"{VISUAL_PREFIX}{k}": v for k, v in reference.items()}, state, self._pretrained
            )
            self._shapes = {k: v.shape for k, v in state.items()}
        return state

    def load_finetuned(self, task: str) -> dict[str, torch.Tensor]:
        path = self.finetuned_path(task)
        state = read_visual_state(path, self._trust_pickle)
        if self._shapes is None:
            self.load_pretrained()
        check_compatible(self._shapes, state, path)
        return state

    def has_talos_mask(self, task: str) -> bool:
        """Whether ``task`` has a TaLoS mask file (checked before a protocol starts)."""
        return task in self._masks

    def talos_mask(self, task: str) -> dict[str, torch.Tensor] | None:
        self._check_task(task, allow_control=False)
        path = self._masks.get(task)
        return None if path is None else read_visual_state(path, self._trust_pickle)

    def build_visual(self, device: torch.device | str = "cpu") -> nn.Module:
        """theta_pre in a fresh tower; for linearised paradigms, the tower's Taylor expansion at
        theta_pre (weights loaded into it later are evaluated as the linearised model)."""
        visual = load_visual_state(build_visual_tower(self.arch, device), self.load_pretrained())
        return LinearizedTower(visual) if is_linearized(self.paradigm) else visual

    # -- tasks ---------------------------------------------------------------------------------
    def classnames(self, task: str) -> list[str]:
        self._check_task(task)
        return list(self._classnames[task])

    def dataset(self, task: str, split: str) -> Dataset:
        self._check_task(task)
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        return self._data(task, split)

    def _task_templates(self, task: str) -> Sequence[str]:
        templates = self._templates
        if isinstance(templates, Mapping):
            templates = templates.get(task)
        if not templates:
            raise InputError(f"{self.name}: no head and no prompt templates for task {task!r}")
        return templates

    def head(self, task: str, device: torch.device | str = "cpu") -> torch.Tensor:
        self._check_task(task)
        if task not in self._heads:
            self.build_heads([task])
        return self._heads[task].to(device)

    def build_heads(self, tasks: Sequence[str], device: torch.device | str = "cpu") -> None:
        """Build missing heads from the pretrained text tower, loading the whole CLIP only once."""
        import open_clip

        missing = [t for t in tasks if t not in self._heads]
        if not missing:
            return
        model = create_clip(self.arch, self._pretrained, device)
        tokenizer = self.tokenizer or open_clip.get_tokenizer(self.arch)
        for task in missing:
            head = zero_shot_head(
                model, tokenizer, self.classnames(task), self._task_templates(task), device
            )
            self._heads[task] = head.float().cpu()
