"""Disentanglement error xi(alpha1, alpha2) (attention-only paper Eq. 2; TaLoS Eq. 10).

xi = sum over t in {1, 2} of mean_{x in D_t} dist(f(x; theta_pre + alpha_t tau_t),
f(x; theta_pre + alpha1 tau1 + alpha2 tau2)). The single-task outputs depend on one coefficient
only, so they are computed once per grid value (2 x points models), and each of the points^2
combined models is evaluated once on D_1 and D_2 together with both heads stacked. When 0 is on
the grid, the single-task models are grid points themselves and cost nothing extra.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import InputError, quote
from ..executor import LOCAL, Executor, Journal
from ..progress import Progress, no_progress
from ._common import (
    TowerMixer,
    cache_key,
    check_shared_pretrained,
    load_cached_frame,
    pretrained_digest,
    resolve_device,
    resolve_tasks,
    save_cached_frame,
    source_task_vectors,
    state_digest,
)
from .xi_grid import XI_PRESETS, XiGrid

__all__ = [
    "CPU_BATCH",
    "DISTANCES",
    "XI_PRESETS",
    "XiGrid",
    "disentanglement_grid",
    "xi_from_runner",
    "xi_summary",
]

#: Images per forward pass on a CPU. With the functional forward (models.fast_forward) one call
#: per model on both tasks' 2 x 256 images beat 256-image calls; the module forward had preferred
#: 256 (its activations stayed in cache).
CPU_BATCH = 512

#: ``run(alpha1, alpha2, images, head) -> logits`` of theta_pre + alpha1 tau1 + alpha2 tau2.
Runner = Callable[[float, float, torch.Tensor, torch.Tensor], torch.Tensor]


def _disagreement(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """TaLoS Eq. 10: 1 where the predicted classes differ."""
    return (reference.argmax(dim=-1) != other.argmax(dim=-1)).float()


def _kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Attention-only paper Eq. 2: KL(p_single || p_combined) of the softmax outputs."""
    log_p = F.log_softmax(reference.float(), dim=-1)
    log_q = F.log_softmax(other.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp_min(0.0)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "prediction": _disagreement,
    "kl": _kl,
}


def _distance(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name not in DISTANCES:
        raise InputError(f"unknown xi distance {name!r}; use one of {', '.join(DISTANCES)}")
    return DISTANCES[name]


class _Outputs:
    """Logits of theta_pre + a1 tau1 + a2 tau2 on D_1 / D_2, one runner call per model for the
    datasets still missing. Models with a zero coefficient are the single-task models, so they
    are kept (2 x points of them) and never evaluated twice; every other model is transient."""

    def __init__(
        self,
        run: Runner,
        task_data: Sequence[tuple[torch.Tensor, torch.Tensor]],
        kept: dict[tuple[float, float, int], torch.Tensor] | None = None,
    ):
        self.run = run
        self.data = list(task_data)
        self.kept = {} if kept is None else kept
        self.stacked: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, a1: float, a2: float, need: tuple[int, ...] = (0, 1)) -> list:
        found = {t: self.kept.get((a1, a2, t)) for t in need}
        missing = [t for t, v in found.items() if v is None]
        if missing:
            key = tuple(missing)
            if key not in self.stacked:  # concatenated once, not once per model
                self.stacked[key] = (
                    torch.cat([self.data[t][0] for t in missing]),
                    torch.cat([self.data[t][1] for t in missing]),
                )
            out = self.run(a1, a2, *self.stacked[key])
            row = col = 0
            for t in missing:
                n, c = len(self.data[t][0]), self.data[t][1].shape[0]
                found[t] = out[row : row + n, col : col + c]
                row, col = row + n, col + c
        if a1 == 0.0 or a2 == 0.0:
            self.kept.update({(a1, a2, t): v for t, v in found.items()})
        return [found.get(0), found.get(1)]


def grid_row(outputs: _Outputs, alphas, i: int, single1, single2, dist) -> list[tuple]:
    """Row ``alpha1 = alphas[i]`` of the grid: (alpha1, alpha2, xi, xi_task1, xi_task2)."""
    out = []
    for j, a2 in enumerate(alphas):
        on1, on2 = outputs.get(alphas[i], a2)
        e1 = float(dist(single1[i], on1).mean())
        e2 = float(dist(single2[j], on2).mean())
        out.append((alphas[i], a2, e1 + e2, e1, e2))
    return out


def xi_from_runner(
    run: Runner,
    task_data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    alphas: Sequence[float],
    distance: str = "prediction",
    progress: Progress = no_progress,
    *,
    workers: Sequence[Runner] = (),
) -> pd.DataFrame:
    """The grid for any model given as a runner; ``task_data`` is ``[(images1, head1), (images2,
    head2)]``. Returns one row per (alpha1, alpha2) with xi and its two per-task terms.

    ``workers`` are extra runners, each with a tower of its own: grid rows are then evaluated in
    parallel threads (torch releases the GIL inside its kernels), one row per runner at a time."""
    dist = _distance(distance)
    outputs = _Outputs(run, task_data)
    total = len(alphas) + 1
    on_grid = 0.0 in alphas  # then (a, 0) and (0, a) are grid points: evaluate both halves now
    single1 = [outputs.get(a, 0.0, (0, 1) if on_grid else (0,))[0] for a in alphas]
    single2 = [outputs.get(0.0, a, (0, 1) if on_grid else (1,))[1] for a in alphas]
    progress(1, total, "single-task models")

    def row(i: int, runner: Runner) -> list[tuple]:
        mine = _Outputs(runner, task_data, outputs.kept)
        return grid_row(mine, alphas, i, single1, single2, dist)

    rows: dict[int, list[tuple]] = {}
    for done, (i, values) in enumerate(_map_rows(row, len(alphas), [run, *workers])):
        rows[i] = values
        progress(done + 2, total, f"alpha1={alphas[i]:+.2f}")
    flat = [r for i in range(len(alphas)) for r in rows[i]]
    return pd.DataFrame(flat, columns=["alpha1", "alpha2", "xi", "xi_task1", "xi_task2"])


def _map_rows(row: Callable[[int, Runner], list], count: int, runners: list[Runner]):
    """Yield (index, row) as rows finish; with several runners, each runs in its own thread."""
    if len(runners) == 1:
        for i in range(count):
            yield i, row(i, runners[0])
        return
    free: queue.Queue = queue.Queue()
    for runner in runners:
        free.put(runner)

    def job(i: int) -> tuple[int, list]:
        runner = free.get()
        try:
            return i, row(i, runner)
        finally:
            free.put(runner)

    pool = ThreadPoolExecutor(max_workers=len(runners))
    try:
        futures = [pool.submit(job, i) for i in range(count)]
        for future in as_completed(futures):
            yield future.result()
    finally:  # on an error or interrupt, drop the rows not started yet
        pool.shutdown(wait=True, cancel_futures=True)


def _tower_runner(mixer: TowerMixer, batch_size: int, device: Any, raw: bool = False) -> Runner:
    """``raw``: the tower's own output times the (identity) head, no normalisation: the
    representation module's output, which the attention-only paper compares with KL (its Eq. 2)."""
    from ..models.evaluation import batched_logits
    from ..models.fast_forward import tower_forward

    def run(a1: float, a2: float, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        visual = mixer.set((a1, a2))
        if not raw:
            return batched_logits(visual, images, head, batch_size=batch_size, device=device)
        forward, head = tower_forward(visual), head.to(device)
        with torch.no_grad():
            parts = [forward(images[i : i + batch_size].to(device)).float() @ head.T
                     for i in range(0, len(images), batch_size)]  # fmt: skip
        return torch.cat(parts)

    return run


def _check_samples(samples: int) -> int:
    if not isinstance(samples, int) or samples < 1:
        raise InputError(f"samples={samples}: give a positive number of samples per task")
    return samples


#: what xi compares: the task heads' outputs (TaLoS, Ortiz-Jimenez) or the representation
#: module's (the image tower without a head, the attention-only paper's Eq. 2, with KL)
XI_ON = ("head", "representation")


def _validate(
    grid: XiGrid | None, distance: str, samples: int, workers: int, on: str = "head"
) -> XiGrid:
    """Every bad option is refused before any model is loaded or any file written."""
    _distance(distance)
    if on not in XI_ON:
        raise InputError(f"xi on {quote(on)}: use head or representation")
    if on == "representation" and distance != "kl":
        raise InputError("xi on the representation compares output distributions: use KL")
    _check_samples(samples)
    if not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers={workers}: give a positive number of worker threads")
    return (grid or XiGrid()).validate()


def _cache_fields(source, tasks, vectors, grid, distance, samples, seed, split) -> dict[str, Any]:
    return {
        "source": source.name,
        "arch": source.arch,
        "pretrained": pretrained_digest(source),
        "vectors": [state_digest(v) for v in vectors],
        "tasks": list(tasks),
        "grid": [grid.points, grid.lo, grid.hi],
        "distance": distance,
        "samples": samples,
        "seed": seed,
        "split": split,
    }


def disentanglement_grid(
    source: Any,
    task1: str,
    task2: str,
    *,
    vectors: Sequence[Mapping[str, torch.Tensor]] | None = None,
    grid: XiGrid | None = None,
    distance: str = "prediction",
    samples: int = 2048,
    seed: int = 0,
    split: str = "test",
    device: Any = "cpu",
    label: str = "",
    progress: Progress = no_progress,
    use_cache: bool = True,
    cache_dir: Any = None,
    batch_size: int | None = None,
    workers: int = 1,
    executor: Executor = LOCAL,
    journal: Journal | None = None,
    on: str = "head",
) -> pd.DataFrame:
    """xi over a grid for two tasks of ``source``, with their task vectors or any edited pair
    (e.g. STA-masked) given in ``vectors``. Cached on disk under a key of all inputs.
    ``workers`` > 1 evaluates grid rows in parallel threads, one image tower each (on a CPU,
    pair it with ``torch.set_num_threads(1)``). ``executor`` (e.g. Ray) runs the rows as its
    units instead; with a ``journal`` finished rows are kept on disk for --resume.
    ``samples`` per task (the papers' 2048, or the whole split when it is smaller); ``on``
    "representation" compares the image tower's outputs without a head."""
    grid = _validate(grid, distance, samples, workers, on)
    tasks = resolve_tasks(source, [task1, task2], minimum=2)
    device = resolve_device(device)
    if batch_size is None:  # see CPU_BATCH
        batch_size = CPU_BATCH if device.type == "cpu" else 2048
    pre = source.load_pretrained()
    if vectors is None:
        found = source_task_vectors(source, tasks, pre)
        vectors = [found[t] for t in tasks]
    if len(vectors) != 2:
        raise InputError(f"xi needs exactly two task vectors, got {len(vectors)}")
    check_shared_pretrained(pre, dict(zip(tasks, vectors)))
    fields = _cache_fields(source, tasks, vectors, grid, distance, samples, seed, split)
    if on != "head":
        fields["on"] = on
    key = cache_key("xi", fields)
    frame = load_cached_frame("xi", key, cache_dir) if use_cache else None
    cached = frame is not None
    if cached:
        progress(grid.points + 1, grid.points + 1, "cached")
    else:
        frame = _fresh_frame(
            source, tasks, pre, vectors, grid, distance, samples, seed, split, device,
            progress, batch_size, workers, on, executor, journal,
        )  # fmt: skip
    if use_cache and not cached:
        save_cached_frame(frame, "xi", key, cache_dir)
    meta = {"task1": task1, "task2": task2, "label": label or source.name, "distance": distance}
    return frame.assign(**meta)[[*meta, "alpha1", "alpha2", "xi", "xi_task1", "xi_task2"]]


def _fresh_frame(
    source, tasks, pre, vectors, grid, distance, samples, seed, split, device,
    progress, batch_size, workers, on, executor, journal,
) -> pd.DataFrame:  # fmt: skip
    """The grid computed now: row units on an executor (or journaled for --resume), else the
    threaded local grid."""
    if on == "head" and (executor is not LOCAL or (journal is not None and workers == 1)):
        from .xi_units import XiContext, xi_on_executor

        ctx = XiContext(
            source=source,
            pretrained=pre,
            vectors=list(vectors),
            tasks=tasks,
            split=split,
            samples=samples,
            seed=seed,
            device=device,
            batch_size=batch_size,
            alphas=grid.alphas(),
            distance=distance,
        )
        return xi_on_executor(ctx, executor, journal, progress)
    return _compute_grid(
        source,
        tasks,
        pre,
        vectors,
        grid,
        distance,
        samples,
        seed,
        split,
        device,
        progress,
        batch_size,
        workers,
        on,
    )


def _compute_grid(
    source,
    tasks,
    pre,
    vectors,
    grid,
    distance,
    samples,
    seed,
    split,
    device,
    progress,
    batch_size,
    workers=1,
    on="head",
) -> pd.DataFrame:
    from ..models.evaluation import head_for, split_tensors

    data = []
    for task in tasks:
        count = min(samples, len(source.dataset(task, split)))  # the whole split when smaller
        images, _labels = split_tensors(source, task, split, max_samples=count, seed=seed)
        head = head_for(source, task, device)
        if on == "representation":  # identity "head": the tower's output itself
            head = torch.eye(head.shape[1], device=device)
        data.append((images.to(device), head))
    # A tower of its own: the evaluation module's shared tower may serve another request meanwhile.
    mixers = [TowerMixer(source.build_visual(device), pre, vectors) for _ in range(workers)]
    raw = on == "representation"
    run, *others = [_tower_runner(m, batch_size, device, raw) for m in mixers]
    return xi_from_runner(run, data, grid.alphas(), distance, progress, workers=others)


def xi_summary(frame: pd.DataFrame, threshold: float = 0.1) -> pd.DataFrame:
    """One row per grid (label, task pair, distance): mean and max xi, and the area of the
    (alpha1, alpha2) region with xi below ``threshold`` (in alpha units and as a fraction)."""
    if threshold < 0 or not math.isfinite(threshold):
        raise InputError(f"xi threshold={threshold}: give a finite value >= 0")
    rows = []
    keys = ["label", "task1", "task2", "distance"]
    for group, part in frame.groupby(keys, sort=False):
        a1 = sorted(part["alpha1"].unique())
        a2 = sorted(part["alpha2"].unique())
        span = (a1[-1] - a1[0]) * (a2[-1] - a2[0])
        below = float((part["xi"] < threshold).mean())
        rows.append(
            (*group, float(part["xi"].mean()), float(part["xi"].max()), below, below * span)
        )
    columns = [*keys, "mean_xi", "max_xi", "fraction_below", "area_below"]
    return pd.DataFrame(rows, columns=columns).assign(threshold=threshold)
