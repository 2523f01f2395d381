"""The Ray executor: each unit of a grid is one Ray task; shared inputs travel once per node.

The context (pretrained weights, task vectors, importances) is put in Ray's object store once;
Ray copies it to a node the first time a task there needs it, and each worker process turns it
back into tensors once and keeps it for all the units it runs. With ``--shared-dir`` (a folder
every node sees) the tensors are written there as safetensors instead and read by path. The
model source itself never travels: workers reopen it from its recipe (zoo folder or manifest).

A worker that dies is replaced and its unit run again (``max_retries``); an error raised by a
unit (bad input) is not retried and reaches the caller as itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import pickle
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, quote
from .executor import ExecutorSpec, Unit

__all__ = ["MAX_RETRIES", "RayExecutor", "SourceRecipe", "ray_executor"]

#: Times a unit is run again after its worker died (a killed process, a lost node).
MAX_RETRIES = 3
#: Seconds to wait for a TCP answer from a cluster address before calling it unreachable.
CONNECT_TIMEOUT = 5.0
#: Seconds the package probe may take (a fresh worker imports torch).
PROBE_TIMEOUT = 120.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclasses.dataclass(frozen=True)
class SourceRecipe:
    """How a worker reopens the driver's model source: a zoo folder + paradigm, a manifest."""

    kind: str
    args: tuple

    @staticmethod
    def of(source: Any) -> Any:
        from .real.source import ManifestSource
        from .zoo.source import ZooSource

        if isinstance(source, ZooSource):
            return SourceRecipe("zoo", (str(source.root), source.paradigm))
        if isinstance(source, ManifestSource):
            return SourceRecipe("manifest", (source.manifest,))
        return source  # another source object travels as it is

    def open(self) -> Any:
        if self.kind == "zoo":
            from .zoo.source import ZooSource

            return ZooSource(*self.args)
        from .real.source import ManifestSource

        return ManifestSource(*self.args)


# ----------------------------------------------------------------------------- transport


@dataclasses.dataclass(frozen=True)
class _OnDisk:
    path: str


def _is_state(value: Any) -> bool:
    import torch

    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _write_state(state: dict, folder: Path, digest: str) -> _OnDisk:
    """One safetensors file per state dict, named by its content (written once, reused)."""
    from safetensors.torch import save_file

    from .io import atomic_path

    path = folder / f"shared-{digest[:32]}.safetensors"
    if not path.is_file():
        with atomic_path(path) as tmp:
            save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, tmp)
    return _OnDisk(str(path))


def _walk(value: Any, leaf) -> Any:
    """Rebuild dataclasses / lists / tuples / dicts with ``leaf`` applied where it applies."""
    done = leaf(value)
    if done is not value:
        return done
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _walk(getattr(value, f.name), leaf) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **{k: v for k, v in fields.items() if _init(value, k)})
    if isinstance(value, list):
        return [_walk(v, leaf) for v in value]
    if isinstance(value, tuple):
        return tuple(_walk(v, leaf) for v in value)
    if isinstance(value, dict):
        return {k: _walk(v, leaf) for k, v in value.items()}
    return value


def _init(value: Any, name: str) -> bool:
    return next(f.init for f in dataclasses.fields(value) if f.name == name)


@dataclasses.dataclass(frozen=True)
class _InStore:
    ref: Any


def externalise(context: Any, share) -> Any:
    """``context`` with every state dict replaced by ``share(state)`` (a file or a store ref)."""
    return _walk(context, lambda v: share(v) if _is_state(v) else v)


#: State dicts a worker has read, by file or object id (the most recent ones are kept).
_LOADED: dict[str, dict] = {}
LOADED_KEEP = 64


def _load(value: Any) -> Any:
    if not isinstance(value, _OnDisk | _InStore):
        return value
    key = value.path if isinstance(value, _OnDisk) else value.ref.hex()
    if key not in _LOADED:
        if isinstance(value, _OnDisk):
            from safetensors.torch import load_file

            state = load_file(value.path)
        else:
            import ray

            state = ray.get(value.ref)
        while len(_LOADED) >= LOADED_KEEP:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = state
    return _LOADED[key]


def internalise(context: Any) -> Any:
    """The reverse of :func:`externalise`: each state dict read once per worker process."""
    return _walk(context, _load)


def _portable(context: Any, share, gpu: bool) -> Any:
    """What goes to the workers: the source as a recipe, a CUDA device as "the task's GPU",
    every state dict as a reference that each node fetches once."""
    import torch

    if dataclasses.is_dataclass(context):
        names = {f.name for f in dataclasses.fields(context)}
        changes = {}
        if "source" in names:
            changes["source"] = SourceRecipe.of(context.source)
        if "device" in names and gpu:
            changes["device"] = torch.device("cuda")
        context = dataclasses.replace(context, **changes)
    return externalise(context, share)


# ----------------------------------------------------------------------------- worker side

_CONTEXTS: dict[str, Any] = {}
_SOURCES: dict[bytes, Any] = {}


def _worker_context(ref: Any) -> Any:
    """The context behind ``ref``, deserialised once per worker (the last two are kept)."""
    import ray

    key = ref.hex()
    if key not in _CONTEXTS:
        context = internalise(ray.get(ref))
        source = getattr(context, "source", None)
        if isinstance(source, SourceRecipe):
            digest = hashlib.sha256(pickle.dumps(source)).digest()
            if digest not in _SOURCES:
                _SOURCES[digest] = source.open()
            context = dataclasses.replace(context, source=_SOURCES[digest])
        while len(_CONTEXTS) >= 2:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
        _CONTEXTS[key] = context
    return _CONTEXTS[key]


def _run_unit(box: list, unit: Unit, item: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return unit(_worker_context(box[0]), item)


# ----------------------------------------------------------------------------- driver side


class RayExecutor:
    """Units as Ray tasks: one CPU each, or one GPU each when the source runs on CUDA."""

    def __init__(self, ray: Any, spec: ExecutorSpec) -> None:
        self.ray, self.spec, self.label = ray, spec, spec.label
        self._shared: dict[str, Any] = {}  # content digest -> where the workers find it

    def _share(self, state: dict) -> Any:
        """One object-store entry (or file) per distinct state dict for this executor's
        lifetime, found by content: weights that several grids load again travel once."""
        from .analyses._common import state_digest

        digest = state_digest(state)
        if digest not in self._shared:
            folder = self.spec.shared_dir
            ref = _write_state(state, folder, digest) if folder else _InStore(self.ray.put(state))
            self._shared[digest] = ref
        return self._shared[digest]

    def run(self, unit: Unit, context: Any, items: Sequence[Any], *, gpu: bool = False):
        import torch

        ray = self.ray
        if not items:
            return
        ref = ray.put(_portable(context, self._share, gpu))
        task = ray.remote(_run_unit).options(
            num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_retries=MAX_RETRIES
        )
        threads = 1 if not gpu else torch.get_num_threads()
        pending = {task.remote([ref], unit, item, threads): i for i, item in enumerate(items)}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(ready[0])
                yield index, _get(ray, ready[0])
        finally:
            for left in pending:
                ray.cancel(left, force=True)


def _get(ray: Any, ref: Any) -> Any:
    """A unit's result; a unit's own bad-input error comes back as that one sentence."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, InputError):
            raise InputError(str(cause)) from None
        raise
    except WorkerCrashedError as exc:
        raise RuntimeError(
            f"a Ray worker died {MAX_RETRIES + 1} times on the same grid point; "
            "see the Ray logs (out of memory?)"
        ) from exc


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InputError(
            "the ray executor needs Ray; pip install ray, or use --executor local"
        ) from exc
    return ray


def _reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            return
    except OSError:
        raise InputError(
            f"nobody answers at Ray address {quote(address)}; start the head with "
            "`ray start --head` and give the address it prints"
        ) from None


def _connect(ray: Any, spec: ExecutorSpec) -> bool:
    """Connect (or start a local instance); True when this call started it."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if spec.address is None:
        # Workers of a local instance inherit this environment: they find the package here
        # even when the driver was started from another folder.
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if _PACKAGE_ROOT not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, *paths])
        ray.init(num_cpus=spec.cpus, **quiet)
        return True
    if spec.address != "auto":
        _reachable(spec.address)
    try:
        ray.init(address=spec.address, **quiet)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        where = "on this machine" if spec.address == "auto" else f"at {quote(spec.address)}"
        raise InputError(
            f"no Ray cluster answers {where}; start one with `ray start --head`, or use "
            "--executor ray for a local instance"
        ) from exc
    return True


def _probe_package() -> bool:
    import importlib.util

    return importlib.util.find_spec("taskarith_core") is not None


def _check_cluster(ray: Any, gpu: bool) -> None:
    """Refuse a cluster that cannot run the units, before any unit is sent."""
    if gpu and ray.cluster_resources().get("GPU", 0) < 1:
        raise InputError(
            "the source runs on CUDA but the Ray cluster has no GPUs; add GPU nodes or run "
            "with --device cpu"
        )
    probe = ray.remote(num_cpus=0)(_by_value(_probe_package))
    try:
        found = ray.get(probe.remote(), timeout=PROBE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure here means the workers cannot run it
        raise InputError(
            "the Ray cluster's workers cannot import this project (taskarith_core); install it "
            "on every node, e.g. pip install -e . in a copy of the project"
        ) from exc
    if not found:
        raise InputError(
            "the Ray cluster's workers cannot import this project (taskarith_core); install it "
            "on every node, e.g. pip install -e . in a copy of the project"
        )


def _by_value(function: Any) -> Any:
    """A copy of ``function`` that pickles by value, so a worker without the package runs it."""
    import types

    return types.FunctionType(function.__code__, {"__builtins__": __builtins__}, "probe")


@contextlib.contextmanager
def ray_executor(spec: ExecutorSpec, *, gpu: bool = False):
    """Connect, check the cluster, yield a :class:`RayExecutor`; stop what was started here."""
    ray = _import_ray()
    started = _connect(ray, spec)
    try:
        _check_cluster(ray, gpu)
        yield RayExecutor(ray, spec)
    finally:
        if started:
            ray.shutdown()
