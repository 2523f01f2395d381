"""Read the weights out of a pickled whole module without running any of the pickle's code.

The task-vectors release of Ilharco et al. saves whole ``ImageEncoder`` modules
(``torch.save(self)``), which ``torch.load(weights_only=True)`` rightly refuses. This unpickler
admits only the globals such a file needs: torch's tensor-rebuild functions, a few builtin
containers, and classes from torch.nn, torchvision transforms, open_clip and the task-vectors code.
Those classes are never imported: each becomes an inert stand-in that just records the state it is
given, so a class renamed in a newer open_clip still loads, and nothing from the file can execute.
Anything else (``os.system``, ``builtins.eval``, ...) is refused with one line. Used only when the
user passed --trust-pickle.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, describe
from ..io import refuse_torchscript

__all__ = [
    "ALLOWED_STUB_MODULES",
    "PickledObject",
    "RefusedGlobal",
    "load_pickled_module_state",
    "refuse_torchscript",
]

#: Classes from these modules (and their submodules) load as inert :class:`PickledObject` stand-ins.
ALLOWED_STUB_MODULES = (
    "open_clip",
    "torch.nn.modules",
    "torchvision.transforms",
    "src.modeling",
    "src.heads",
    "modeling",
    "heads",
    "task_vectors",
)
_REAL = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("torch", "Size"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list."""


class PickledObject:
    """Stand-in for a class named in the pickle: keeps constructor args and state, runs no code."""

    origin = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.origin}>"


_STUBS: dict[str, type] = {}


def _stub(module: str, name: str) -> type:
    origin = f"{module}.{name}"
    if origin not in _STUBS:
        _STUBS[origin] = type(name, (PickledObject,), {"origin": origin})
    return _STUBS[origin]


def _allowed_module(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in ALLOWED_STUB_MODULES)


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` hands out torch rebuild functions, containers, dtypes and inert stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REAL:
            return pickle.Unpickler.find_class(self, module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if _allowed_module(module) and name.isidentifier():
            return _stub(module, name)
        raise RefusedGlobal(f"{module}.{name}")


def _refuse_plain_load(*args: Any, **kwargs: Any) -> Any:
    raise RefusedGlobal("legacy (non-zip) torch format")


#: What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class (zip format only).
_PICKLE_MODULE = types.ModuleType("taskarith_restricted_pickle")
_PICKLE_MODULE.Unpickler = RestrictedUnpickler
_PICKLE_MODULE.load = _refuse_plain_load


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Walk a pickled ``nn.Module`` ``__dict__``: persistent parameters and buffers, recursively."""
    state = getattr(obj, "state", None)
    if not isinstance(state, dict) or "_parameters" not in state:
        return
    for name, value in state["_parameters"].items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value.detach()
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in skip:
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out)


def _tensors_of(root: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(root, PickledObject):
        out: dict[str, torch.Tensor] = {}
        _collect(root, "", out)
        if out:
            return out
    if isinstance(root, dict):
        inner = root.get("state_dict", root)
        tensors = {str(k): v for k, v in inner.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {k: v.detach() for k, v in tensors.items()}
    raise InputError(f"{path}: holds neither a module nor a state dict of tensors; give one")


def load_pickled_module_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a pickled module (``torch.save(module)``), keyed like ``module.state_dict()``."""
    path = Path(path)
    refuse_torchscript(path)
    try:
        root = torch.load(
            path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False
        )
    except RefusedGlobal:
        # The refused name comes from the file and is not repeated; torch's own text is not
        # passed on either, since it suggests weights_only=False, which would run the file.
        raise InputError(
            f"{path}: refused to unpickle: it asks for code other than torch / open_clip / "
            "task-vectors classes; this file may run code: do not use it, or convert it where "
            "you trust it"
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        raise InputError(
            f"{path}: could not be read as a pickled module ({describe(exc)}); re-save it with "
            "torch.save(model.state_dict(), ...) where you trust it"
        ) from None
    return _tensors_of(root, path)
