"""The methods as the papers' tables name them, derived from the registry of merge methods.

``ta``, ``ties``, ``sta-lp``, ``talos-mask``...: :data:`METHODS` maps each table name to a
registry method, its tuned parameter and grid, and the side inputs (importances, masks) it
needs. This module imports only the registry, so sweeps, negation sweeps and the streamed
drivers all build on it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError

__all__ = [
    "ALIASES",
    "ALPHA_GRID",
    "DARE_GRID",
    "DARE_RATE",
    "PCB_GRID",
    "LAMBDA_GRID",
    "METHODS",
    "NEGATION_P_GRID",
    "P_GRID",
    "SPARSITY_GRID",
    "MethodSpec",
    "SweepMethod",
    "bottom_k_masks",
    "method_spec",
    "negated_state",
]

#: Ilharco et al. / TaLoS A.1: alpha in {0.05, 0.1, ..., 1.0} (0 is the pretrained model).
LAMBDA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: STA's quantile p on a fixed grid (the paper fixes 0.7). Fusion searches use :func:`search_grid`
#: instead: for N tasks only N - 1 distinct masks exist (:mod:`taskarith_core.sta_levels`).
P_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
#: STA forgetting has no lambda (Eq. 20): p alone sets how much of the task is removed, and the
#: control rule's boundary lies at p 0.7-0.95, so p is searched there in steps of 0.05 as lambda is.
NEGATION_P_GRID = (0.1, 0.2, 0.3, 0.4, *(round(0.05 * i, 2) for i in range(10, 20)), 0.975, 0.99)
#: TaLoS A.1: sparsity ratios {0.1, ..., 0.9, 0.95, 0.99}.
#: DARE's drop rate where a table adds it to another method (its authors' default for vision)
DARE_RATE = 0.5
DARE_GRID = tuple(round(0.1 * i, 1) for i in range(1, 10))
#: PCB's coefficient: the range its authors search (their default 1.2 inside)
PCB_GRID = tuple(round(0.8 + 0.1 * i, 1) for i in range(6))
#: the SVD merges' alpha (TSV-M and Iso pick theirs around 1-1.5 on validation)
ALPHA_GRID = tuple(round(0.2 * i, 1) for i in range(2, 11))
SPARSITY_GRID = (*(round(0.1 * i, 1) for i in range(1, 10)), 0.95, 0.99)


@dataclass(frozen=True)
class SweepMethod:
    """A method as the tables name it: registry entry, tuned parameter and its grid."""

    registry: str
    param: str
    grid: tuple[float, ...]
    metric: str | None = None  #: importance metric (STA)
    masks: str | None = None  #: "talos" (the source's masks) or "fisher" (post-hoc bottom-k)
    fixed: dict[str, Any] = field(default_factory=dict)
    negation: str | None = None  #: NEGATION_METHODS entry, when the method can forget
    negation_grid: tuple[float, ...] | None = None  #: values searched for forgetting, if not grid

    @property
    def forget_grid(self) -> tuple[float, ...]:
        return self.negation_grid or self.grid

    def search_grid(self, n_tasks: int, param: str | None = None) -> tuple[float, ...]:
        """The values a fusion search tries for ``n_tasks``: STA's p at its N - 1 distinct masks
        (a fixed grid would repeat masks and let the grid decide), else the paper's grid."""
        if self.registry == "sta" and (param or self.param) == "p":
            from ..sta_levels import distinct_p

            return distinct_p(n_tasks)
        return self.grid


#: the name sweeps used before (``fusion.MethodSpec`` is the registry's spec of a method)
MethodSpec = SweepMethod

#: the papers' table entries: registry method, tuned parameter, grid and fixed settings
_TABLES: dict[str, SweepMethod] = {
    "ta": SweepMethod("task_arithmetic", "lam", LAMBDA_GRID, negation="task_arithmetic"),
    "ties": SweepMethod("ties", "lam", LAMBDA_GRID),
    "dare": SweepMethod("dare", "lam", LAMBDA_GRID),
    "consensus": SweepMethod("consensus", "lam", LAMBDA_GRID),
    **{
        f"sta-{name.replace('_', '')}": SweepMethod(
            "sta", "p", P_GRID, metric=name, negation="sta", negation_grid=NEGATION_P_GRID
        )
        for name in ("lp", "amp", "lp_amp", "fisher", "magnitude", "random")
    },
    "talos-mask": SweepMethod(
        "masked_arithmetic", "lam", LAMBDA_GRID, masks="talos", negation="task_arithmetic"
    ),
    "bottomk-fisher": SweepMethod(
        "masked_arithmetic", "sparsity", SPARSITY_GRID, masks="fisher", fixed={"lam": 1.0}
    ),
    # baselines of the papers' tables; "+dare" rows drop half of each task vector first
    "avg": SweepMethod("average", "dare_rate", (0.0,)),
    "avg+dare": SweepMethod("average", "dare_rate", DARE_GRID),
    "ta+dare": SweepMethod("task_arithmetic", "lam", LAMBDA_GRID, fixed={"dare_rate": DARE_RATE}),
    "ties+dare": SweepMethod("ties", "lam", LAMBDA_GRID, fixed={"dare_rate": DARE_RATE}),
    "pcb": SweepMethod("pcb", "lam", PCB_GRID),
    "breadcrumbs": SweepMethod("breadcrumbs", "lam", LAMBDA_GRID),
    "tsv-m": SweepMethod("tsv_m", "lam", ALPHA_GRID),
    "iso-c": SweepMethod("iso_c", "lam", ALPHA_GRID),
    "iso-cts": SweepMethod("iso_cts", "lam", ALPHA_GRID),
    # coefficients learned on the test images themselves: nothing left to choose on val
    "adamerging-task": SweepMethod("adamerging", "init", (0.3,), fixed={"granularity": "task"}),
    "adamerging-layer": SweepMethod("adamerging", "init", (0.3,), fixed={"granularity": "layer"}),
}


#: older sweep names still accepted
ALIASES = {"fisher-mask": "bottomk-fisher"}


def _plain(name: str, spec: Any) -> SweepMethod:
    """A registered method no table entry names: tuned over lambda when it has one, else run at
    its defaults (one value of its first parameter)."""
    names = [p.name for p in spec.params]
    if "lam" in names:
        return SweepMethod(name, "lam", spec.lam_grid or LAMBDA_GRID)
    first = spec.params[0]
    return SweepMethod(name, first.name, (first.default,))


def _derived() -> dict[str, SweepMethod]:
    """The table entries, then every registered method without side inputs that none of them
    runs, under its registry name: a new method reaches sweeps and ``reproduce`` by registering."""
    from ..fusion import MERGE_METHODS

    found = dict(_TABLES)
    covered = {sweep.registry for sweep in found.values()}
    for name, spec in MERGE_METHODS.items():
        if name not in covered and spec.needs is None and spec.params:
            found[name] = _plain(name, spec)
    return found


METHODS: dict[str, SweepMethod] = _derived()


def method_spec(name: str) -> SweepMethod:
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def bottom_k_masks(
    scores: Sequence[Mapping[str, torch.Tensor]], sparsity: float
) -> list[dict[str, torch.Tensor]]:
    """TaLoS-style post-hoc masks: among the maskable tensors (not the embeddings or the final
    projection, as in TaLoS), keep the (1 - sparsity) fraction of entries with the lowest score
    (Fisher, or any importance) over the whole model; ties at the threshold are kept."""
    from ..zoo.talos import is_maskable

    k = sparsity
    if not 0.0 <= k < 1.0:
        raise InputError(f"sparsity={k} is outside [0, 1); choose the fraction to freeze")
    masks = []
    for score in scores:
        maskable = [v.float().reshape(-1) for key, v in score.items() if is_maskable(key)]
        if not maskable:
            raise InputError("no maskable tensor in the Fisher scores; score the image tower")
        flat = torch.cat(maskable)
        keep = max(1, round((1.0 - k) * flat.numel()))
        threshold = torch.kthvalue(flat, keep).values
        masks.append({key: (v.float() <= threshold) & is_maskable(key) for key, v in score.items()})
    return masks


def negated_state(
    name: str,
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    value: float,
    *,
    importance: Mapping[str, torch.Tensor] | None = None,
    mask: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """theta_pre minus the task (TA: lambda tau; STA: M tau at quantile p; masked: lambda M tau)."""
    from ..fusion import negate
    from ..taskvec import add_scaled, task_vector

    spec = method_spec(name)
    if spec.negation is None:
        raise InputError(f"method {name!r} has no negation; use ta, talos-mask or an sta-* method")
    if mask is not None:
        tau = task_vector(pretrained, finetuned)
        kept = {k: v * mask[k].to(v.dtype) if k in mask else v for k, v in tau.items()}
        finetuned = add_scaled(pretrained, kept)
    params: dict[str, Any] = {spec.param: value}
    if spec.negation == "sta":
        params["importance"] = importance
    return negate(spec.negation, pretrained, pretrained, finetuned, **params)
