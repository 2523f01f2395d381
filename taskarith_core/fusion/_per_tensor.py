"""Run a per-tensor rule over whole state dicts, so every method is written once, per tensor.

Per-tensor rules are what makes streaming possible: the file-based driver calls the same
rule with one tensor name at a time from every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..taskvec import StateDict, is_editable

__all__ = ["TensorRule", "apply_per_tensor", "work_dtype"]

#: ``rule(key, pretrained_tensor, task_vector_tensors) -> delta`` (added to the pretrained tensor).
TensorRule = Callable[[str, torch.Tensor, list[torch.Tensor]], torch.Tensor]


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """Arithmetic in at least float32 so fp16/bf16 checkpoints do not lose small task vectors."""
    return torch.promote_types(tensor.dtype, torch.float32)


def apply_per_tensor(
    base: Mapping[str, torch.Tensor],
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    rule: TensorRule,
) -> StateDict:
    """base + rule(tau_1..tau_N) for every editable key; other keys are copied from ``base``."""
    out: StateDict = {}
    for key, base_value in base.items():
        pre = pretrained[key]
        if not is_editable(pre):
            out[key] = base_value.clone()
            continue
        dtype = work_dtype(pre)
        taus = [ft[key].to(dtype) - pre.to(dtype) for ft in finetuned]
        delta = rule(key, pre, taus)
        out[key] = (base_value.to(dtype) + delta).to(base_value.dtype)
    return out
