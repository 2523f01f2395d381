"""A run of the explorer as data: every setting the page used, as a dataclass that round-trips JSON.

The page writes one after every Run; ``python -m taskarith_core run --config run.json`` reads it
back and calls the same service functions, so the CLI reproduces exactly the numbers the page
showed.
Settings a method does not use are still recorded (the page had them), but :meth:`RunConfig.key`
drops them so caches are not invalidated by a control that does not matter.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = [
    "ACTIONS",
    "IMPORTANCE_CHOICES",
    "MERGE_CHOICES",
    "METHOD_PARAMS",
    "NEGATE_CHOICES",
    "RunConfig",
    "SOURCE_KINDS",
    "load_config",
]

SOURCE_KINDS = ("zoo", "manifest")
ACTIONS = ("merge", "negate")
#: merge methods the page offers (``talos_mask``: masked arithmetic with TaLoS-style bottom-k masks)
MERGE_CHOICES = ("sta", "task_arithmetic", "ties", "dare", "consensus", "talos_mask")
NEGATE_CHOICES = ("task_arithmetic", "sta")
IMPORTANCE_CHOICES = ("lp", "amp", "lp_amp", "fisher", "magnitude", "random")
SPLIT_CHOICES = ("train", "val", "test")

#: which settings change the result of each (action, method); the rest are ignored by caches
METHOD_PARAMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("merge", "sta"): ("importance", "p", "samples", "seed"),
    ("merge", "task_arithmetic"): ("lam",),
    ("merge", "ties"): ("k", "lam"),
    ("merge", "dare"): ("drop_rate", "lam", "seed"),
    ("merge", "consensus"): ("agreement", "tall_lambda", "lam"),
    ("merge", "talos_mask"): ("importance", "k", "lam", "samples", "seed"),
    ("negate", "task_arithmetic"): ("lam",),
    ("negate", "sta"): ("importance", "p", "samples", "seed"),
}


@dataclass
class RunConfig:
    """Everything that determines what the Merge or Forget tab shows."""

    version: int = 1
    source: str = "zoo"  #: "zoo" (embedded, or ``zoo_root``) or "manifest"
    paradigm: str = "full"  #: zoo fine-tuning paradigm: full / attention / talos
    zoo_root: str | None = None  #: another zoo folder (tests' mini zoo); None = assets/zoo
    manifest: str | None = None  #: manifest file when ``source == "manifest"``
    action: str = "merge"  #: "merge" (task addition) or "negate" (forgetting)
    tasks: list[str] = field(default_factory=list)  #: tasks merged; empty = all of the source
    target: str | None = None  #: task to forget when ``action == "negate"``
    method: str = "sta"
    importance: str = "lp"  #: STA / TaLoS-mask importance metric
    p: float = 0.8  #: STA quantile
    k: float = 0.2  #: TIES: top-k fraction kept; TaLoS-mask: sparsity (fraction frozen, < 1)
    lam: float = 0.3  #: lambda, the task-vector coefficient
    drop_rate: float = 0.9  #: DARE drop rate
    agreement: int = 2  #: Consensus: minimum number of tasks that must select an element
    tall_lambda: float = 0.4  #: Consensus: lambda_t of the TALL masks
    samples: int = 32  #: Ns, samples per task for lp / fisher importance
    seed: int = 0
    split: str = "test"  #: split the accuracies are measured on
    max_samples: int | None = None  #: evaluation images per task (None = the whole split)
    device: str = "cpu"

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """Parse and validate; unknown keys and wrong types are user errors, not crashes."""
        if not isinstance(data, dict):
            raise InputError("a run config must be a JSON object; download one from the page")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"run config has unknown setting {unknown[0]!r}; "
                f"allowed: {', '.join(sorted(known))}"
            )
        cfg = cls(**{k: _coerce(k, v) for k, v in data.items()})
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"run config is not valid JSON ({exc}); use a file the page wrote"
            ) from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def validate(self) -> RunConfig:
        """Check every setting's range; messages say which setting and what to use instead."""
        _choice("source", self.source, SOURCE_KINDS)
        _choice("action", self.action, ACTIONS)
        methods = MERGE_CHOICES if self.action == "merge" else NEGATE_CHOICES
        _choice("method", self.method, methods)
        _choice("importance", self.importance, IMPORTANCE_CHOICES)
        _choice("split", self.split, SPLIT_CHOICES)
        if self.source == "manifest" and not self.manifest:
            raise InputError("source is 'manifest' but no manifest path is set; give its path")
        _unit("p", self.p, closed=True)
        _unit("k", self.k, closed=self.method != "talos_mask")
        _unit("drop_rate", self.drop_rate, closed=False)
        for name in ("lam", "tall_lambda"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(
                    f"{name}={getattr(self, name)} is not a finite number; use e.g. 0.3"
                )
        if self.samples < 1:
            raise InputError(f"Ns (samples)={self.samples} must be at least 1; use e.g. 32")
        if self.agreement < 1:
            raise InputError(f"agreement={self.agreement} must be at least 1; use e.g. 2")
        if self.max_samples is not None and self.max_samples < 1:
            raise InputError(f"max_samples={self.max_samples} must be at least 1 or null (all)")
        if self.action == "negate" and not self.target:
            raise InputError("a forgetting run needs a target task; pick the task to forget")
        return self

    def used_params(self) -> tuple[str, ...]:
        return METHOD_PARAMS[(self.action, self.method)]

    def key(self, p_rank: int | None = None) -> tuple:
        """Cache key: the source, the tasks, and only the settings this method reads.

        ``p_rank`` replaces p when the caller knows that only the quantile's lower rank matters
        (STA fusion: with N tasks, p values with the same floor((N-1) p) give the same masks).
        """
        params = tuple(
            (name, getattr(self, name)) if name != "p" or p_rank is None else ("p_rank", p_rank)
            for name in self.used_params()
        )
        return (
            self.source_key(),
            self.action,
            tuple(self.tasks),
            self.target,
            self.method,
            params,
            self.split,
            self.max_samples,
        )

    def source_key(self) -> tuple:
        if self.source == "manifest":
            return ("manifest", str(self.manifest))
        return ("zoo", self.paradigm, self.zoo_root)


_INT_FIELDS = {"version", "agreement", "samples", "seed"}
_FLOAT_FIELDS = {"p", "k", "lam", "drop_rate", "tall_lambda"}


def _coerce(name: str, value: Any) -> Any:
    """JSON numbers arrive as int or float; anything else of the wrong type is named."""
    if name in _INT_FIELDS or (name == "max_samples" and value is not None):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise InputError(f"run config setting {name!r}={value!r} must be a whole number")
        return int(value)
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"run config setting {name!r}={value!r} must be a number")
        return float(value)
    if name == "tasks":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise InputError(f"run config setting 'tasks'={value!r} must be a list of task names")
        return list(value)
    if value is not None and not isinstance(value, str):
        raise InputError(f"run config setting {name!r}={value!r} must be a string")
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of {', '.join(allowed)}; pick one of those")


def _unit(name: str, value: float, closed: bool) -> None:
    ok = 0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0
    if not ok:
        bracket = "[0, 1]" if closed else "[0, 1)"
        raise InputError(f"{name}={value} is outside {bracket}; choose a value in {bracket}")


def load_config(path: str | Path) -> RunConfig:
    """Read a run config file written by the page (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: run config not found; download one from the page first")
    return RunConfig.from_json(path.read_text())
