"""Task vectors as plain ``dict[str, Tensor]``: tau_t = theta_t - theta_pre, and applying them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .errors import InputError, file_key

__all__ = [
    "StateDict",
    "add_scaled",
    "check_same_layout",
    "is_editable",
    "task_vector",
]

StateDict = dict[str, torch.Tensor]


def is_editable(tensor: torch.Tensor) -> bool:
    """Only floating-point tensors carry task knowledge; integer buffers are copied unchanged."""
    return tensor.is_floating_point()


def check_same_layout(
    reference: Mapping[str, torch.Tensor],
    other: Mapping[str, torch.Tensor],
    ref_name: str = "pretrained",
    other_name: str = "fine-tuned",
    check_dtype: bool = True,
) -> None:
    """Refuse two state dicts whose keys, shapes or dtypes differ, naming the first difference."""
    missing = [(i, k) for i, k in enumerate(reference) if k not in other]
    if missing:
        raise InputError(
            f"{other_name}: key {file_key(missing[0][1], missing[0][0])} of {ref_name} is missing "
            f"({len(missing)} missing in all); both must be checkpoints of the same architecture"
        )
    extra = [(i, k) for i, k in enumerate(other) if k not in reference]
    if extra:
        raise InputError(
            f"{other_name}: key {file_key(extra[0][1], extra[0][0])} is not in {ref_name} "
            f"({len(extra)} extra in all); both must be checkpoints of the same architecture"
        )
    for key, ref in reference.items():
        got = other[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise InputError(
                f"{other_name}: tensor {key!r} has shape {tuple(got.shape)} but {ref_name} has "
                f"{tuple(ref.shape)}; both must be checkpoints of the same architecture"
            )
        if check_dtype and got.dtype != ref.dtype:
            raise InputError(
                f"{other_name}: tensor {key!r} is {got.dtype} but {ref_name} is {ref.dtype}; "
                "convert both to the same dtype"
            )


def task_vector(pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]):
    """tau = theta_t - theta_pre over the editable keys (computed in float32 or wider)."""
    out: StateDict = {}
    for key, pre in pretrained.items():
        if is_editable(pre):
            dtype = torch.promote_types(pre.dtype, torch.float32)
            out[key] = finetuned[key].to(dtype) - pre.to(dtype)
    return out


def add_scaled(
    base: Mapping[str, torch.Tensor],
    deltas: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
    scale: float = 1.0,
) -> StateDict:
    """base + scale * sum(deltas), keeping base's dtype; keys absent from the deltas are copied."""
    delta_list = [deltas] if isinstance(deltas, Mapping) else list(deltas)
    out: StateDict = {}
    for key, value in base.items():
        parts = [d[key] for d in delta_list if key in d]
        if not parts or not is_editable(value):
            out[key] = value.clone()
            continue
        work = torch.promote_types(value.dtype, torch.float32)
        total = parts[0].to(work).clone()
        for part in parts[1:]:
            total += part.to(work)
        out[key] = (value.to(work) + scale * total).to(value.dtype)
    return out
