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
import json
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..fusion import MERGE_METHODS, check_params
from ..importance import IMPORTANCE_METRICS, compute_importance
from ..io import PICKLE_SUFFIXES, save_state_dict
from ..keys import VISUAL_PREFIX
from ..models.files import read_visual_state
from ..safetensors_reader import SafetensorsFile

__all__ = ["StreamedMethod", "TowerView", "streamed_method", "streamed_negation"]

StateDict = dict[str, torch.Tensor]
#: registry methods whose delta is ``lam * X(taus)`` computed last, so X can be precomputed
_LINEAR = ("task_arithmetic", "masked_arithmetic", "ties")
_SHARD_BYTES = 256 << 20


def _as_float(tensor: torch.Tensor) -> torch.Tensor:
    """What :func:`read_visual_state` does to a checkpoint's tensors (float32 for any float)."""
    return tensor.float() if tensor.is_floating_point() else tensor


def _as_bool(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.bool()


class TowerView(Mapping):
    """Read-only, lazy ``visual.*`` view of one checkpoint file: a tensor is read when indexed.

    Keys follow :func:`read_visual_state` (a whole CLIP keeps its ``visual.`` tensors, a bare tower
    gets the prefix); pickles (trusted only) are loaded whole, safetensors read per tensor."""

    def __init__(self, stack: contextlib.ExitStack, path: str | Path, trust_pickle: bool,
                 convert: Callable[[torch.Tensor], torch.Tensor] = _as_float) -> None:  # fmt: skip
        self.path, self._convert = Path(path), convert
        if self.path.suffix.lower() in PICKLE_SUFFIXES:
            self._tensors: StateDict | None = read_visual_state(self.path, trust_pickle)
            self._names = {k: k for k in self._tensors}
            return
        self._tensors = None
        self._file = stack.enter_context(SafetensorsFile(self.path))
        names = self._file.keys()
        if any(n.startswith(VISUAL_PREFIX) for n in names):
            self._names = {n: n for n in names if n.startswith(VISUAL_PREFIX)}
        else:
            self._names = {f"{VISUAL_PREFIX}{n}": n for n in names}

    def shape(self, key: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[key].shape)
        return tuple(self._file.shape(self._names[key]))

    def __getitem__(self, key: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._convert(self._tensors[key])
        if key not in self._names:
            raise KeyError(key)
        return self._convert(self._file.get_tensor(self._names[key]))

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def check_layout(pre: TowerView, other: TowerView, role: str, partial: bool = False) -> None:
    """Same keys and shapes as theta_pre, read from the headers (``partial``: a subset is fine)."""
    for key in other:
        if key not in pre:
            raise InputError(f"{other.path}: {role} tensor {key!r} is not in {pre.path}")
        if other.shape(key) != pre.shape(key):
            raise InputError(
                f"{other.path}: {role} tensor {key!r} has shape {other.shape(key)} but "
                f"{pre.path} has {pre.shape(key)}; use checkpoints of one architecture"
            )
    missing = [k for k in pre if k not in other]
    if missing and not partial:
        raise InputError(f"{other.path}: {role} lacks tensor {missing[0]!r}; not of this model")


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

    def importances(self, metric: str) -> list[Callable[[str], torch.Tensor]]:
        """Per task, ``key -> importance tensor``: model-based metrics are computed (or found in
        the cache) one task at a time and read back from a file; tensor-only ones per tensor."""
        if not IMPORTANCE_METRICS[metric].needs_model:
            return [self._tensor_metric(metric, i) for i in range(len(self.tasks))]
        from ..models.importance import cached_importance

        readers = []
        for index, task in enumerate(self.tasks):
            value = cached_importance(
                self.source, task, metric, self.ctx["samples"], self.ctx["seed"], self.ctx["device"]
            )
            path = save_state_dict(dict(value), self.workdir / f"{metric}-{index}.safetensors")
            del value
            readers.append(TowerView(self.stack, path, False, convert=lambda t: t).__getitem__)
        return readers

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
        views = []
        for index, task in enumerate(self.tasks):
            path = finder(task) if finder is not None else None
            if path is None:
                mask = self.source.talos_mask(task)
                if mask is None:
                    raise InputError(
                        f"model source {self.source.name!r} has no TaLoS mask for task {task!r}; "
                        "use the talos paradigm or STA masks (--masks sta)"
                    )
                path = save_state_dict(mask, self.workdir / f"talos-{index}.safetensors")
                del mask
            view = TowerView(self.stack, path, self.trust, convert=_as_bool)
            check_layout(self.pre, view, f"TaLoS mask of {task!r}", partial=True)
            views.append(view)
        return views


def _fisher_thresholds(
    inputs: _Inputs, scores: Sequence[Callable[[str], torch.Tensor]], ks: Sequence[float]
) -> dict[tuple[int, float], float]:
    """Per (task, k): the ``round((1 - k) n)``-th smallest maskable score, the threshold
    :func:`taskarith_core.analyses.sweeps.fisher_bottom_k_masks` takes, in two passes."""
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
    return dict(zip(plan, kth_smallest_many(chunks, ranks)))


def _write_shards(
    items: Iterator[tuple[str, torch.Tensor]], stem: Path, stack: contextlib.ExitStack
) -> dict[str, TowerView]:
    """Write tensors as they come into files of ~256 MB; ``key -> view`` of the file holding it."""
    files: dict[str, TowerView] = {}
    shard: StateDict = {}
    size = index = 0

    def flush() -> None:
        nonlocal shard, size, index
        path = save_state_dict(shard, stem.with_name(f"{stem.name}-{index}.safetensors"))
        view = TowerView(stack, path, False)
        files.update(dict.fromkeys(shard, view))
        shard, size, index = {}, 0, index + 1

    for key, tensor in items:
        shard[key] = tensor
        size += tensor.numel() * tensor.element_size()
        if size >= _SHARD_BYTES:
            flush()
    if shard:
        flush()
    return files


class StreamedMethod:
    """A method bound to checkpoint files: ``merge(value)`` streams one merged state dict.

    Drop-in for :class:`taskarith_core.analyses.sweeps.Prepared` in the sweeps and protocols."""

    def __init__(self, name: str, inputs: _Inputs, values: Sequence[float] = ()) -> None:
        from ..analyses.sweeps import method_spec

        self.name, self.spec, self._in = name, method_spec(name), inputs
        self._method = MERGE_METHODS[self.spec.registry]
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
            self._linear[setting] = _write_shards(items, stem, self._in.stack)
        return self._linear[setting]

    def merge(self, value: float, param: str | None = None) -> StateDict:
        """theta for this value of the tuned parameter, built one tensor name at a time."""
        params = self.params(value, param)
        k = float(params.pop("k")) if self._scores is not None else None  # k picks the masks
        full = {**self._method.defaults, **params}
        check_params(self.spec.registry, full, len(self._in.fts))
        linear = self.spec.registry in _LINEAR and "lam" in params and self._scores is None
        x = self._linear_part(full) if linear else None
        out: StateDict = {}
        for key in self._in.keys:
            pre = self._in.pre[key]
            if not pre.is_floating_point():
                out[key] = pre.clone()
            elif x is not None:
                out[key] = pre + x[key][key] * full["lam"]
            else:
                out[key] = self._delta(key, pre, full, k, zero_pre=False)
        return out


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
def streamed_negation(
    source: Any, method: str, task: str, *, samples: int = 32, seed: int = 0, device: Any = "cpu"
) -> Iterator[Callable[[float], StateDict]]:
    """``value -> theta_pre - (masked) tau_task`` built per tensor name from the files, with
    :func:`taskarith_core.analyses.negation.negated_state` applied to one-key state dicts."""
    from ..analyses.negation import negated_state
    from ..analyses.sweeps import method_spec

    spec = method_spec(method)
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="taskarith-") as tmp:
        inputs = _Inputs(stack, source, [task], Path(tmp), _context(samples, seed, device))
        imp = inputs.importances(spec.metric)[0] if spec.negation == "sta" else None
        mask = inputs.talos_masks()[0] if spec.masks == "talos" else None
        ft = inputs.fts[0]

        def state(value: float) -> StateDict:
            out: StateDict = {}
            for key in inputs.keys:
                pre = inputs.pre[key]
                if not pre.is_floating_point():
                    out[key] = pre.clone()
                    continue
                side = {
                    "importance": None if imp is None else {key: imp(key)},
                    "mask": None if mask is None else ({key: mask[key]} if key in mask else {}),
                }
                out[key] = negated_state(method, {key: pre}, {key: ft[key]}, value, **side)[key]
            return out

        yield state
