"""Where the units of a grid run: one after another in this process, or as Ray tasks.

A grid (a sweep's values, an xi grid's rows, a paper table's methods x values) is a list of
independent units, each ``unit(context, item) -> result``: ``context`` holds what every unit
shares (the pretrained weights, fine-tuned models or task vectors, importances), ``item`` what
one unit varies. :func:`run_grid` runs them with any executor and returns the results in the
order of ``items``, whatever order they finished in. Each finished result is appended to a
:class:`Journal` at once, so an interrupted run continues with ``--resume`` from the units on disk.

``local`` runs in this process. ``ray`` starts a Ray instance on this machine, ``ray:auto`` joins
the cluster started with ``ray start``, ``ray:HOST:PORT`` the one at that address; the Ray side
lives in :mod:`taskarith_core.executor_ray`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import InputError, quote
from .progress import Progress, no_progress

__all__ = [
    "LOCAL",
    "Executor",
    "ExecutorSpec",
    "Journal",
    "LocalExecutor",
    "Unit",
    "open_executor",
    "page_executor",
    "parse_executor",
    "run_grid",
    "use_for_page",
]

#: ``unit(context, item) -> result``; results must be JSON values (they go to the journal).
Unit = Callable[[Any, Any], Any]
#: How shared inputs reach Ray workers: the object store, or files on a shared file system.
TRANSPORTS = ("store", "path")


@dataclass(frozen=True)
class ExecutorSpec:
    """What ``--executor`` asked for; ``address`` None starts a Ray instance on this machine."""

    kind: str = "local"
    address: str | None = None
    shared_dir: Path | None = None  #: inputs go by path through this folder (shared file system)
    cpus: int | None = None  #: CPUs of a Ray instance started here (default: all)

    @property
    def label(self) -> str:
        return self.kind if self.address is None else f"{self.kind}:{self.address}"


def parse_executor(text: str, shared_dir: str | None = None) -> ExecutorSpec:
    """``local``, ``ray``, ``ray:auto`` or ``ray:HOST:PORT`` -> an :class:`ExecutorSpec`."""
    kind, _, address = text.strip().partition(":")
    if kind == "local" and not address:
        if shared_dir:
            raise InputError("--shared-dir is for the ray executor; drop it or use --executor ray")
        return ExecutorSpec()
    if kind != "ray":
        raise InputError(
            f"unknown executor {quote(text)}; use local, ray, ray:auto or ray:HOST:PORT"
        )
    if address and address != "auto":
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(
                f"Ray address {quote(address)} is not HOST:PORT; write e.g. ray:10.0.0.5:6379 "
                "or ray:auto"
            )
    folder = Path(shared_dir) if shared_dir else None
    if folder is not None and not folder.is_dir():
        raise InputError(f"--shared-dir {quote(shared_dir)} is not a folder; create it first")
    return ExecutorSpec("ray", address or None, folder)


class Executor(Protocol):
    """Runs units and yields ``(index, result)`` as each one finishes."""

    label: str

    def run(
        self, unit: Unit, context: Any, items: Sequence[Any], *, gpu: bool
    ) -> Any:  # Iterator[tuple[int, Any]]
        ...


class LocalExecutor:
    """One unit after another in this process (the default; no copies of anything)."""

    label = "local"

    def run(self, unit: Unit, context: Any, items: Sequence[Any], *, gpu: bool = False):
        for index, item in enumerate(items):
            yield index, unit(context, item)


LOCAL = LocalExecutor()


class Journal:
    """Finished units of one run, one JSON line each, appended as they finish.

    The first line records a fingerprint of everything that determines the results; resuming
    a different run is refused rather than mixed. A half-written last line (the process was
    killed while writing it) is ignored, so that unit simply runs again."""

    def __init__(self, path: str | Path, fingerprint: str, resume: bool = False) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        self.done: dict[str, Any] = self._read() if resume else {}
        self._started = resume and self.path.is_file()

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        lines = self.path.read_text().splitlines()
        head = _json_line(lines[0]) if lines else None
        if not isinstance(head, dict) or head.get("run") != self.fingerprint:
            raise InputError(
                f"{self.path}: the rows on disk come from a run with other settings; run "
                "again without --resume to start over"
            )
        done = {}
        for line in lines[1:]:
            entry = _json_line(line)
            if isinstance(entry, dict) and "key" in entry and "result" in entry:
                done[str(entry["key"])] = entry["result"]
        return done

    def record(self, key: str, result: Any) -> None:
        """Append one finished unit and flush it to disk before the next one is awaited."""
        mode = "a" if self._started else "w"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, mode) as handle:
            if not self._started:
                handle.write(json.dumps({"run": self.fingerprint}) + "\n")
            handle.write(json.dumps({"key": key, "result": result}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._started = True
        self.done[key] = result

    def finish(self) -> None:
        """The run's outputs are written: the journal is no longer needed."""
        self.path.unlink(missing_ok=True)


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def run_grid(
    executor: Executor,
    unit: Unit,
    context: Any,
    items: Sequence[Any],
    *,
    keys: Sequence[str],
    labels: Sequence[str] | None = None,
    journal: Journal | None = None,
    progress: Progress = no_progress,
    gpu: bool = False,
) -> list[Any]:
    """Results of ``unit(context, item)`` for every item, in the order of ``items``.

    ``keys`` name the units in the journal (unique within a run); units already in it are not
    run again. ``gpu``: each unit needs one GPU (the source runs on CUDA)."""
    if len(keys) != len(items) or len(set(keys)) != len(keys):
        raise ValueError("run_grid needs one unique key per item")
    labels = list(labels) if labels is not None else [str(k) for k in keys]
    results: dict[int, Any] = {}
    if journal is not None:
        results = {i: journal.done[k] for i, k in enumerate(keys) if k in journal.done}
    todo = [i for i in range(len(items)) if i not in results]
    total = len(items)
    if results:
        progress(len(results), total, f"{len(results)} on disk")
    for position, result in executor.run(unit, context, [items[i] for i in todo], gpu=gpu):
        index = todo[position]
        results[index] = result
        if journal is not None:
            journal.record(keys[index], result)
        progress(len(results), total, labels[index])
    return [results[i] for i in range(total)]


def open_executor(spec: ExecutorSpec, *, gpu: bool = False):
    """A context manager giving a ready executor: for Ray, connected and checked (reachable,
    the project's package importable on its workers, GPUs when ``gpu``) before anything is
    written; a Ray instance started here is stopped on exit."""
    import contextlib

    if spec.kind == "local":
        return contextlib.nullcontext(LOCAL)
    from .executor_ray import ray_executor

    return ray_executor(spec, gpu=gpu)


#: The executor of the page's grid actions (sweep, xi): local unless the page was started with
#: ``--ray ADDRESS``; the connection stays open for the life of the process.
_PAGE: dict[str, Any] = {"executor": LOCAL, "stack": None}


def use_for_page(spec: ExecutorSpec, *, gpu: bool = False) -> Executor:
    """Connect once (checked as for the CLI) and make ``spec`` the page's executor."""
    import contextlib

    stack = contextlib.ExitStack()
    executor = stack.enter_context(open_executor(spec, gpu=gpu))
    _PAGE.update(executor=executor, stack=stack)
    return executor


def page_executor() -> Executor:
    """The executor the page's sweep and xi actions run on."""
    return _PAGE["executor"]
