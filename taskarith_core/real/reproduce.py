"""The papers' tables from one call: run a protocol on a model source, put published numbers beside.

``published.csv`` keeps the numbers as printed, one row per (paper, table, arch, method, task,
metric), with the table it came from and a note on how the paper's set-up differs (STA fixes its
coefficients and uses 6 tasks on ViT-B/16; TaLoS averages 8 tasks). Our numbers are measured with
the protocol of :mod:`taskarith_core.analyses.protocol` (hyperparameters chosen on validation) on
whatever tasks the source has, so the mean is over *those* tasks: the ``tasks`` column says which.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..progress import Progress, no_progress

__all__ = [
    "PARADIGM_ROWS",
    "PROTOCOLS",
    "PUBLISHED_CSV",
    "check_methods",
    "compare_with_published",
    "paper_arch",
    "published",
    "reproduce",
    "summarise",
]

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
PROTOCOLS = ("addition", "negation")
#: published rows that are task arithmetic on checkpoints of another paradigm (TaLoS Tables 1-2)
PARADIGM_ROWS = {"linearized": "linearized-ft", "l-lora": "l-lora", "lota": "lota"}
_METRICS = {"addition": ("absolute", "normalised"), "negation": ("target", "control")}


@cache
def _published_frame() -> pd.DataFrame:
    return pd.read_csv(PUBLISHED_CSV, dtype={"table": str})


def published(protocol: str | None = None, arch: str | None = None) -> pd.DataFrame:
    """Rows of ``published.csv``, optionally of one protocol and one architecture."""
    frame = _published_frame()
    if protocol is not None:
        frame = frame[frame["protocol"] == protocol]
    if arch is not None:
        frame = frame[frame["arch"] == arch]
    return frame.reset_index(drop=True)


def paper_arch(arch: str) -> str:
    """The papers' name for an open_clip arch (``ViT-B-32-quickgelu`` -> ``ViT-B-32``)."""
    return arch.removesuffix("-quickgelu").removesuffix("-gelu")


def summarise(ours: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """One row per (method, task) in percent, in the published metrics' names."""
    if protocol == "addition":
        frame = ours.assign(absolute=100 * ours["accuracy"], normalised=100 * ours["normalised"])
        return frame[["method", "param", "value", "task", "absolute", "normalised"]]
    frame = ours.assign(
        target=100 * ours["target_accuracy"], control=100 * ours["control_accuracy"]
    )
    zeroshot = ours.assign(
        method="zeroshot",
        param=None,
        value=None,
        target=100 * ours["target_zeroshot"],
        control=100 * ours["control_zeroshot"],
    ).drop_duplicates("task")
    both = pd.concat([zeroshot, frame], ignore_index=True)
    return both[["method", "param", "value", "task", "target", "control"]]


def compare_with_published(
    ours: pd.DataFrame, protocol: str, arch: str, paradigm: str = "full"
) -> pd.DataFrame:
    """Our summary with one column per published (paper, table, metric) for the same arch.

    On checkpoints of a paradigm the papers list as a row of its own (linearised fine-tuning,
    L-LoRA, LoTA), our task arithmetic is that row."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; use addition or negation")
    mine = summarise(ours, protocol)
    if paradigm in PARADIGM_ROWS:
        mine = mine.assign(method=mine["method"].replace("ta", PARADIGM_ROWS[paradigm]))
    pub = published(protocol, paper_arch(arch))
    if pub.empty:
        return mine.assign(published="none for this architecture")
    pub = pub.assign(column=pub["paper"] + " T" + pub["table"] + " " + pub["metric"])
    wide = pub.pivot_table(index=["method", "task"], columns="column", values="value")
    wide = wide.reset_index()
    wide.columns.name = None
    return mine.merge(wide, on=["method", "task"], how="left")


def check_methods(
    source: Any, protocol: str, methods: Sequence[str], tasks: Sequence[str] | None = None
) -> None:
    """Refuse, before anything runs, a method that is unknown, has no negation (for the negation
    protocol) or needs TaLoS masks the source lacks."""
    from ..analyses._common import resolve_tasks
    from ..analyses.sweeps import method_spec

    if not methods:
        raise InputError("no method to run; give --methods, e.g. ta,ties,sta-lp")
    tasks = resolve_tasks(source, tasks)
    for name in methods:
        spec = method_spec(name)
        if protocol == "negation" and spec.negation is None:
            raise InputError(
                f"method {name!r} has no negation; use ta, talos-mask or an sta-* method"
            )
        if spec.masks == "talos":
            has = getattr(source, "has_talos_mask", None)
            missing = [t for t in tasks if has is not None and not has(t)]
            if missing:
                raise InputError(
                    f"method {name!r} needs the TaLoS masks of the fine-tuning, and "
                    f"{source.name} has none for {missing[0]}; drop {name} or use a source "
                    "fine-tuned with TaLoS (zoo:talos, or talos_mask in the manifest)"
                )


def reproduce(
    source: Any,
    protocol: str,
    methods: Sequence[str],
    *,
    tasks: Sequence[str] | None = None,
    device: Any = "cpu",
    grids: Mapping[str, Sequence[float]] | None = None,
    max_samples: int | None = None,
    samples: int = 32,
    seed: int = 0,
    stream: bool | None = None,
    progress: Progress = no_progress,
    executor: Any = None,
    journal: Any = None,
    on_method: Callable[[str, pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the protocol on ``source``; return (our full table, comparison with the papers).

    Every method is checked against the source first (:func:`check_methods`), so a method the
    source cannot run is refused before anything is computed. ``on_method(name, rows)`` gets
    each method's comparison rows as soon as they are measured.
    ``stream`` (default: for a manifest's checkpoints, not for the small embedded zoo) builds
    every merged / negated model from the files one tensor at a time, so at most one model copy
    is held beside the evaluation tower; the numbers are the same either way.

    ``executor`` (e.g. Ray, :mod:`taskarith_core.executor`) runs the grid points; its workers
    get the models in memory, so it does not stream. ``journal`` keeps finished points for
    --resume."""
    from ..analyses.protocol import addition_protocol, negation_protocol
    from .streamed import should_stream

    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; use addition or negation")
    if protocol == "negation" and not getattr(source, "control_task", None):
        raise InputError(
            f"{source.name}: negation needs a control set; add `control:` to the manifest"
        )
    check_methods(source, protocol, methods, tasks)
    run = addition_protocol if protocol == "addition" else negation_protocol
    grid_run = {"executor": executor, "journal": journal}
    grid_run = {k: v for k, v in grid_run.items() if v is not None}
    stream = False if executor is not None and executor.label != "local" else stream
    stream = should_stream(source, stream)

    def done(name: str, rows: pd.DataFrame) -> None:
        if on_method is not None:
            table = compare_with_published(rows, protocol, source.arch)
            on_method(name, table[table["method"] == name])

    ours = run(
        source,
        list(methods),
        tasks,
        device=device,
        grids=grids,
        max_samples=max_samples,
        samples=samples,
        seed=seed,
        stream=stream,
        progress=progress,
        grid_run=grid_run,
        on_method=done,
    )
    used = ",".join(tasks or source.tasks)
    paradigm = getattr(source, "paradigm", "full")
    table = compare_with_published(ours, protocol, source.arch, paradigm).assign(tasks=used)
    return ours, table
