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

from .errors import InputError, describe
from .limits import (
    COEFFICIENT,
    CONFIG_VERSION,
    EVAL_IMAGES,
    LIST_VALUES,
    SAMPLES,
    SEED,
    check_float,
    check_int,
)
from .textfile import read_text_file

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
PARADIGMS = ("full", "attention", "talos")
#: characters of a text setting (a path, a task name, a device)
_TEXT_LIMIT = 4096

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
        """Parse and validate; unknown keys and wrong types are user errors, not crashes.

        Nothing read from the config is repeated in a message (it may be any file the user
        pointed at): a setting is named by our name for it, an unknown one by its position."""
        if not isinstance(data, dict):
            raise InputError("a run config must be a JSON object; download one from the page")
        known = [f.name for f in fields(cls)]
        position = next((i for i, key in enumerate(data) if key not in known), None)
        if position is not None:
            raise InputError(
                f"run config setting number {position + 1} is not a run-config setting; "
                f"allowed: {', '.join(sorted(known))}"
            )
        cfg = cls(**{k: _coerce(k, v) for k, v in data.items()})
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5000-digit number
            raise InputError(
                f"run config is not valid JSON ({describe(exc)}); use a file the page wrote"
            ) from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def validate(self) -> RunConfig:
        """Check every setting's range; messages say which setting and what to use instead."""
        if self.version != CONFIG_VERSION:
            raise InputError(
                f"run config version must be {CONFIG_VERSION}, the format this explorer reads; "
                "download the config again from the page"
            )
        _choice("source", self.source, SOURCE_KINDS)
        _choice("paradigm", self.paradigm, PARADIGMS)
        _choice("action", self.action, ACTIONS)
        methods = MERGE_CHOICES if self.action == "merge" else NEGATE_CHOICES
        _choice("method", self.method, methods)
        _choice("importance", self.importance, IMPORTANCE_CHOICES)
        _choice("split", self.split, SPLIT_CHOICES)
        if self.source == "manifest" and not self.manifest:
            raise InputError("source is 'manifest' but no manifest path is set; give its path")
        check_float("p", self.p, 0.0, 1.0, echo=False)
        check_float("k", self.k, 0.0, 1.0, high_open=self.method == "talos_mask", echo=False)
        check_float("drop_rate", self.drop_rate, 0.0, 1.0, high_open=True, echo=False)
        check_float("lam", self.lam, -COEFFICIENT, COEFFICIENT, echo=False)
        check_float("tall_lambda", self.tall_lambda, 0.0, COEFFICIENT, echo=False)
        check_int("Ns (samples)", self.samples, 1, SAMPLES, echo=False)
        check_int("agreement", self.agreement, 1, LIST_VALUES, echo=False)
        check_int("seed", self.seed, 0, SEED, echo=False)
        if self.max_samples is not None:
            check_int("max_samples", self.max_samples, 1, EVAL_IMAGES, echo=False)
        if len(self.tasks) > LIST_VALUES:
            raise InputError(f"a run config names at most {LIST_VALUES} tasks; name fewer")
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
        whole = isinstance(value, int | float) and not isinstance(value, bool)
        if not whole or not math.isfinite(value) or value != int(value):
            raise InputError(f"run config setting {name!r} must be a whole number")
        return int(value)
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"run config setting {name!r} must be a number")
        return float(value)
    if name == "tasks":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise InputError("run config setting 'tasks' must be a list of task names")
        return list(value)
    if value is not None and not isinstance(value, str):
        raise InputError(f"run config setting {name!r} must be a string")
    if value is not None and len(value) > _TEXT_LIMIT:
        raise InputError(f"run config setting {name!r} is longer than {_TEXT_LIMIT} characters")
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{name} is not one of {', '.join(allowed)}; pick one of those")


def load_config(path: str | Path) -> RunConfig:
    """Read a run config file written by the page (or by hand)."""
    return RunConfig.from_json(read_text_file(path, "run config"))
