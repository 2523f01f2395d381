"""The papers' protocols on checkpoint files with bounded memory: never N fine-tuned models at once.

A merged model is built one tensor name at a time from the files, with the same per-tensor rules as
the in-memory path (the fusion registry's functions called on one-key state dicts), so results are
bitwise the same while peak memory is one output copy plus the tensors of one name:

- methods linear in lambda (TA, TIES, masked TA) precompute ``X`` (``sum tau``, TIES's disjoint
  mean, ``sum M tau``) once into a temp file; each grid value is then ``theta_pre + lambda X``;
- global statistics are streamed too: TIES thresholds (two passes of exact radix select), the
  Fisher bottom-k thresholds of every (task, k), TaLoS masks read per tensor from their files;
- model-based importances (lp, fisher) are computed one task at a time through the disk cache and
  read back per tensor; tensor-only ones (amp, magnitude, random) are computed per tensor.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..fusion import MERGE_METHODS, check_params
from ..importance import IMPORTANCE_METRICS, compute_importance
from ..io import save_state_dict
from .tensorfiles import (
    TowerView,
    as_bool,
    assemble,
    check_layout,
    release_freed_memory,
    write_shards,
)

__all__ = [
    "StreamedMethod",
    "should_stream",
    "streamed_method",
    "streamed_negation",
    "streamed_subsets",
]

StateDict = dict[str, torch.Tensor]
#: registry methods whose delta is ``lam * X(taus)`` computed last, so X can be precomputed
#: registered methods with theta = theta_pre + lam X: a sweep over lam writes X once
_LINEAR = tuple(name for name, spec in MERGE_METHODS.items() if spec.linear_in_lambda)


class _Inputs:
    """theta_pre, the fine-tuned files and the per-task importances / masks, all lazy."""

    def __init__(self, stack: contextlib.ExitStack, source: Any, tasks: Sequence[str],
                 workdir: Path, ctx: Mapping[str, Any]) -> None:  # fmt: skip
        # FileSource keeps the user's --trust-pickle privately; converted files are safetensors
        self.trust = bool(getattr(source, "_trust_pickle", False))
        self.source, self.tasks, self.workdir, self.ctx = source, list(tasks), workdir, ctx
        self.stack = stack
        self.pre = TowerView(stack, source.pretrained_path(), self.trust)
        self.fts = [TowerView(stack, source.finetuned_path(t), self.trust) for t in self.tasks]
        for task, view in zip(self.tasks, self.fts):
            check_layout(self.pre, view, f"fine-tuned model of {task!r}")
        self.keys = list(self.pre)
        # per-task side files (importances, masks): written once, shared by every subset view
        self._side_files: dict[tuple[str, str], TowerView] = {}
        self._side_home = (stack, workdir)

    def subset(self, tasks: Sequence[str], stack: contextlib.ExitStack, workdir: Path) -> _Inputs:
        """The same inputs restricted to ``tasks``; per-method temp files (X shards) go to
        ``workdir`` / ``stack``, while importance and mask files stay shared with this object."""
        index = {task: i for i, task in enumerate(self.tasks)}
        unknown = [t for t in tasks if t not in index]
        if unknown:
            raise InputError(f"tasks {unknown} are not among the streamed inputs {self.tasks}")
        view = copy.copy(self)  # shares pre, the open files and the side-file memo
        view.tasks, view.fts = list(tasks), [self.fts[index[t]] for t in tasks]
        view.stack, view.workdir = stack, workdir
        return view

    def resampled(self, samples: int) -> _Inputs:
        """The same inputs with model importances from ``samples`` samples (Ns); the side-file
        memo is shared and keyed by Ns, so each (metric, task, Ns) file is still written once."""
        view = copy.copy(self)
        view.ctx = {**self.ctx, "samples": samples}
        return view

    def _side_file(
        self,
        kind: str,
        task: str,
        make: Callable[[Path], Path],
        convert: Callable[[torch.Tensor], torch.Tensor],
        trust: bool = False,
        check: Callable[[TowerView], None] | None = None,
    ) -> TowerView:
        """A per-task side file, made (``make(suggested path) -> path``) and checked on first use
        and read through one view thereafter."""
        if (kind, task) not in self._side_files:
            stack, home = self._side_home
            path = make(home / f"{kind}-{len(self._side_files)}.safetensors")
            view = TowerView(stack, path, trust, convert=convert)
            if check is not None:
                check(view)
            self._side_files[kind, task] = view
        return self._side_files[kind, task]

    def _importance_files(self, metric: str) -> list[TowerView]:
        """Per task, the file of a model-based importance (computed or found in the cache one
        task at a time) at this object's Ns and seed."""
        from ..models.importance import cached_importance

        ctx = self.ctx
        kind = f"{metric}-n{ctx['samples']}-s{ctx['seed']}"

        def make(task: str) -> Callable[[Path], Path]:
            def write(path: Path) -> Path:
                value = cached_importance(
                    self.source, task, metric, ctx["samples"], ctx["seed"], ctx["device"]
                )
                written = save_state_dict(dict(value), path)
                del value
                release_freed_memory()
                return written

            return write

        same = lambda t: t  # noqa: E731 - importances keep their dtype
        return [self._side_file(kind, t, make(t), same) for t in self.tasks]

    def importances(self, metric: str) -> list[Callable[[str], torch.Tensor]]:
        """Per task, ``key -> importance tensor``: model-based metrics are read back from their
        files; tensor-only ones are computed per tensor."""
        if not IMPORTANCE_METRICS[metric].needs_model:
            return [self._tensor_metric(metric, i) for i in range(len(self.tasks))]
        return [view.__getitem__ for view in self._importance_files(metric)]

    def importance_names(self, metric: str) -> list[str]:
        """Tensor names ``metric`` scores: a model metric's file's own names, else every editable
        tensor (as :func:`taskarith_core.importance.compute_importance` takes them)."""
        if IMPORTANCE_METRICS[metric].needs_model:
            return list(self._importance_files(metric)[0])
        from ..taskvec import is_editable

        return [key for key in self.keys if is_editable(self.pre[key])]

    def _tensor_metric(self, metric: str, index: int) -> Callable[[str], torch.Tensor]:
        task, ft = self.tasks[index], self.fts[index]
        context = {k: self.ctx[k] for k in ("samples", "seed", "device")}

        def one(key: str) -> torch.Tensor:
            pre, tuned = {key: self.pre[key]}, {key: ft[key]}
            return compute_importance(metric, pre, tuned, source=self.source, task=task, **context)[
                key
            ]

        return one

    def talos_masks(self) -> list[TowerView]:
        """The source's TaLoS masks (bool), read per tensor from their files."""
        finder = getattr(self.source, "talos_mask_path", None)

        def make(task: str) -> Callable[[Path], Path]:
            def find_or_write(path: Path) -> Path:
                found = finder(task) if finder is not None else None
                if found is not None:
                    return found
                mask = self.source.talos_mask(task)
                if mask is None:
                    raise InputError(
                        f"model source {self.source.name!r} has no TaLoS mask for task {task!r}; "
                        "use the talos paradigm or STA masks (--masks sta)"
                    )
                return save_state_dict(mask, path)

            return find_or_write

        def checker(task: str) -> Callable[[TowerView], None]:
            return lambda view: check_layout(
                self.pre, view, f"TaLoS mask of {task!r}", partial=True
            )

        return [
            self._side_file("talos", t, make(t), as_bool, self.trust, checker(t))
            for t in self.tasks
        ]


def _fisher_thresholds(
    inputs: _Inputs, scores: Sequence[Callable[[str], torch.Tensor]], ks: Sequence[float]
) -> dict[tuple[int, float], float]:
    """Per (task, k): the ``round((1 - k) n)``-th smallest maskable score, the threshold
    :func:`taskarith_core.analyses.sweeps.bottom_k_masks` takes, in two passes."""
    from ..select import kth_smallest_many
    from ..zoo.talos import is_maskable

    for k in ks:
        if not 0.0 <= k < 1.0:
            raise InputError(f"sparsity k={k} is outside [0, 1); choose the fraction to freeze")
    maskable = [key for key in inputs.keys if is_maskable(key)]
    if not maskable:
        raise InputError("no maskable tensor in the Fisher scores; score the image tower")
    total = sum(int(torch.Size(inputs.pre.shape(key)).numel()) for key in maskable)
    plan = [(t, float(k)) for t in range(len(scores)) for k in ks]

    def chunks() -> Iterator[list[torch.Tensor]]:
        for key in maskable:
            per_task = [score(key).float().reshape(-1) for score in scores]
            yield [per_task[t] for t, _ in plan]

    ranks = [max(1, round((1.0 - k) * total)) for _, k in plan]
    found = dict(zip(plan, kth_smallest_many(chunks, ranks)))
    release_freed_memory()
    return found


class StreamedMethod:
    """A method bound to checkpoint files: ``merge(value)`` streams one merged state dict.

    Drop-in for :class:`taskarith_core.analyses.sweeps.Prepared` in the sweeps and protocols."""

    def __init__(self, name: str, inputs: _Inputs, values: Sequence[float] = ()) -> None:
        from ..analyses.methods import method_spec

        self.name, self.spec, self._in = name, method_spec(name), inputs
        self._method = MERGE_METHODS[self.spec.registry]
        if self._method.needs == "adaptation":
            raise InputError(
                f"{name} runs the model on test images with every task vector in memory, so it "
                "cannot stream from checkpoint files; run it on a source that fits in memory"
            )
        self._imps = inputs.importances(self.spec.metric) if self.spec.metric else None
        self._masks = inputs.talos_masks() if self.spec.masks == "talos" else None
        self._scores = inputs.importances("fisher") if self.spec.masks == "fisher" else None
        self._thresholds: dict[tuple[int, float], float] = {}
        if self._scores is not None and values:
            self._thresholds = _fisher_thresholds(inputs, self._scores, values)
        self._stats: dict[str, dict[str, Any]] = {}
        self._linear: dict[str, dict[str, TowerView]] = {}

    def params(self, value: float, param: str | None = None) -> dict[str, Any]:
        return {**self.spec.fixed, (param or self.spec.param): float(value)}

    def _global(self, full: Mapping[str, Any]) -> dict[str, Any]:
        """Global statistics (TIES thresholds) of these parameters, computed once by streaming."""
        key = json.dumps({k: v for k, v in full.items() if k != "lam"}, sort_keys=True)
        if key not in self._stats:
            pre, fts = self._in.pre, self._in.fts
            stats = self._method.global_stats.items()
            self._stats[key] = {name: fn(pre, fts, full) for name, fn in stats}
            release_freed_memory()
        return self._stats[key]

    def _side(self, key: str, k: float | None) -> dict[str, Any]:
        """Importances or masks of one tensor name, one per task."""
        if self._imps is not None:
            return {"importances": [{key: imp(key)} for imp in self._imps]}
        if self._masks is not None:
            return {"masks": [{key: m[key]} if key in m else {} for m in self._masks]}
        if self._scores is None or k is None:
            return {}
        from ..zoo.talos import is_maskable

        tasks = range(len(self._scores))
        if any((t, k) not in self._thresholds for t in tasks):
            self._thresholds.update(_fisher_thresholds(self._in, self._scores, [k]))
        limits = [self._thresholds[(t, k)] for t in tasks]
        keep = is_maskable(key)
        return {
            "masks": [{key: (s(key).float() <= lim) & keep} for s, lim in zip(self._scores, limits)]
        }

    def _delta(self, key: str, pre: torch.Tensor, full: dict, k: float | None, zero_pre: bool):
        """The registry's rule on one tensor name; ``zero_pre`` gives X of theta_pre + lam X."""
        fts = [ft[key] for ft in self._in.fts]
        if zero_pre:  # tau - 0 == tau exactly, so the rule sees the same task vectors
            fts = [ft.to(pre.dtype) - pre for ft in fts]
            pre = torch.zeros_like(pre)
        kwargs = {**full, **self._global(full), **self._side(key, k)}
        return self._method.fn({key: pre}, [{key: ft} for ft in fts], **kwargs)[key]

    def _linear_part(self, full: dict[str, Any]) -> dict[str, TowerView]:
        """X with theta = theta_pre + lam X, written once per setting of the other parameters,
        in shards so that only ~256 MB of X is ever in memory."""
        setting = json.dumps({k: v for k, v in full.items() if k != "lam"}, sort_keys=True)
        if setting not in self._linear:
            unit = {**full, "lam": 1.0}
            stem = self._in.workdir / f"linear-{len(self._linear)}"
            items = (
                (key, self._delta(key, pre, unit, None, zero_pre=True))
                for key, pre in ((k, self._in.pre[k]) for k in self._in.keys)
                if pre.is_floating_point()
            )
            self._linear[setting] = write_shards(items, stem, self._in.stack)
            release_freed_memory()
        return self._linear[setting]

    def merge(self, value: float, param: str | None = None) -> StateDict:
        """theta for this value of the tuned parameter, built one tensor name at a time."""
        params = self.params(value, param)
        # the sparsity picks the masks
        k = float(params.pop("sparsity")) if self._scores is not None else None
        full = check_params(self.spec.registry, params, len(self._in.fts))
        linear = self.spec.registry in _LINEAR and "lam" in params and self._scores is None
        x = self._linear_part(full) if linear else None
        if x is not None:
            lam = full["lam"]
            return assemble(self._in.pre, lambda key, pre: pre + x[key][key] * lam)
        return assemble(self._in.pre, lambda key, pre: self._delta(key, pre, full, k, False))


def should_stream(source: Any, stream: bool | None) -> bool:
    """The caller's choice, else stream a manifest's (large, real) checkpoints and keep the small
    embedded zoo on its in-memory path."""
    if stream is not None:
        return stream
    from .source import ManifestSource

    return isinstance(source, ManifestSource)


def _context(samples: int, seed: int, device: Any) -> dict[str, Any]:
    return {"samples": samples, "seed": seed, "device": device}


@contextlib.contextmanager
def streamed_method(
    source: Any,
    name: str,
    tasks: Sequence[str],
    *,
    values: Sequence[float] = (),
    samples: int = 32,
    seed: int = 0,
    device: Any = "cpu",
) -> Iterator[StreamedMethod]:
    """:func:`taskarith_core.analyses.sweeps.prepare_method` over files; temp files (X, copies of
    importances) live in a folder of the system temp dir ($TMPDIR) removed on exit. ``values``:
    the grid, when known, so Fisher thresholds of every k are found in one pass."""
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="taskarith-") as tmp:
        inputs = _Inputs(stack, source, tasks, Path(tmp), _context(samples, seed, device))
        yield StreamedMethod(name, inputs, values)


@contextlib.contextmanager
def streamed_subsets(
    source: Any, tasks: Sequence[str], *, samples: int = 32, seed: int = 0, device: Any = "cpu"
) -> Iterator[Callable[..., contextlib.AbstractContextManager[StreamedMethod]]]:
    """``(name, subset, values=()) -> context of a StreamedMethod`` over subsets of ``tasks``:
    each task's importance (or mask) file is written once for the whole run rather than once per
    subset (task-count scaling merges dozens of subsets), and each method's own temp files are
    removed when its context closes, so disk use stays one X plus the side files."""
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="taskarith-") as tmp:
        inputs = _Inputs(stack, source, tasks, Path(tmp), _context(samples, seed, device))

        @contextlib.contextmanager
        def method(name: str, subset: Sequence[str], values: Sequence[float] = ()):
            with contextlib.ExitStack() as own, tempfile.TemporaryDirectory(dir=tmp) as work:
                yield StreamedMethod(name, inputs.subset(subset, own, Path(work)), values)

        yield method


@contextlib.contextmanager
def streamed_negation(
    source: Any, method: str, task: str, *, samples: int = 32, seed: int = 0, device: Any = "cpu"
) -> Iterator[Callable[[float], StateDict]]:
    """``value -> theta_pre - (masked) tau_task`` built per tensor name from the files, with
    :func:`taskarith_core.analyses.negation.negated_state` applied to one-key state dicts."""
    from ..analyses.methods import method_spec, negated_state

    spec = method_spec(method)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="taskarith-") as tmp:
        inputs = _Inputs(stack, source, [task], Path(tmp), _context(samples, seed, device))
        imp = inputs.importances(spec.metric)[0] if spec.negation == "sta" else None
        mask = inputs.talos_masks()[0] if spec.masks == "talos" else None
        ft = inputs.fts[0]

        def state(value: float) -> StateDict:
            def rule(key: str, pre: torch.Tensor) -> torch.Tensor:
                side = {
                    "importance": None if imp is None else {key: imp(key)},
                    "mask": None if mask is None else ({key: mask[key]} if key in mask else {}),
                }
                return negated_state(method, {key: pre}, {key: ft[key]}, value, **side)[key]

            return assemble(inputs.pre, rule)

        yield state
