"""A run of the explorer as data: every setting the page used, as a dataclass that round-trips JSON.

The page writes one after every Run; ``python -m taskarith_core run --config run.json`` reads it
back and calls the same service functions, so the CLI reproduces exactly the numbers the page
showed. The method's hyperparameters live in ``params``, keyed by the names its spec declares
(:mod:`taskarith_core.fusion.spec`), so a new method needs no field here; files of the first
format (one field per hyperparameter, shared between methods) are read and converted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError, describe
from .fusion import MERGE_METHODS, NEGATION_METHODS
from .fusion.params import Param
from .fusion.spec import MethodSpec
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
    "NEGATE_CHOICES",
    "PAGE_SIDE_INPUTS",
    "SPARSITY",
    "RunConfig",
    "SOURCE_KINDS",
    "load_config",
    "method_spec",
    "page_params",
]

SOURCE_KINDS = ("zoo", "manifest")
ACTIONS = ("merge", "negate")
IMPORTANCE_CHOICES = ("lp", "amp", "lp_amp", "fisher", "magnitude", "random")
SPLIT_CHOICES = ("train", "val", "test")
#: the zoo's paradigms (taskarith_core.zoo.PARADIGMS imports torch; a test keeps both equal)
PARADIGMS = ("full", "attention", "talos", "linearized", "l-lora", "lota")
#: characters of a text setting (a path, a task name, a device)
_TEXT_LIMIT = 4096

#: side inputs the service makes from the source: importances of the chosen metric,
#: TaLoS-style bottom-k masks of them, and the test images with a model forward (AdaMerging)
PAGE_SIDE_INPUTS = (None, "importances", "importance", "masks", "adaptation")
#: the setting of the bottom-k masks the service makes for a method that reads masks
SPARSITY = Param(
    "sparsity",
    "float",
    0.9,
    "fraction of entries frozen: each task keeps its (1 - sparsity) least important entries "
    "(TaLoS-style bottom-k masks)",
    symbol="k",
    low=0.0,
    high=1.0,
    high_open=True,
    step=0.01,
)
_SIDE_PARAMS: dict[str | None, tuple[Param, ...]] = {"masks": (SPARSITY,)}


def _offered(table: dict[str, MethodSpec]) -> tuple[str, ...]:
    return tuple(name for name, spec in table.items() if spec.needs in PAGE_SIDE_INPUTS)


#: methods the page and run configs offer: every registered one whose side input they can make
MERGE_CHOICES = _offered(MERGE_METHODS)
NEGATE_CHOICES = _offered(NEGATION_METHODS)


def method_spec(action: str, method: str) -> MethodSpec:
    """The spec of ``method`` for ``action`` (merge or negate)."""
    return (MERGE_METHODS if action == "merge" else NEGATION_METHODS)[method]


def page_params(action: str, method: str) -> tuple[Param, ...]:
    """The method's parameters plus the settings of the side input the service makes for it."""
    spec = method_spec(action, method)
    return spec.params + _SIDE_PARAMS.get(spec.needs, ())


@dataclass
class RunConfig:
    """Everything that determines what the Merge or Forget tab shows."""

    version: int = CONFIG_VERSION
    source: str = "zoo"  #: "zoo" (embedded, or ``zoo_root``) or "manifest"
    paradigm: str = "full"  #: zoo fine-tuning paradigm: full / attention / talos
    zoo_root: str | None = None  #: another zoo folder (tests' mini zoo); None = assets/zoo
    manifest: str | None = None  #: manifest file when ``source == "manifest"``
    action: str = "merge"  #: "merge" (task addition) or "negate" (forgetting)
    tasks: list[str] = field(default_factory=list)  #: tasks merged; empty = all of the source
    target: str | None = None  #: task to forget when ``action == "negate"``
    method: str = "sta"
    #: the method's hyperparameters by name (see ``page_params``); a missing one is its default
    params: dict[str, Any] = field(default_factory=dict)
    importance: str = "lp"  #: importance metric of methods that read importances or masks
    samples: int = 32  #: Ns, samples per task for lp / fisher importance
    seed: int = 0  #: seed of the importance samples (and of the random metric)
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
        if data.get("version", CONFIG_VERSION if "params" in data else 1) == 1:
            data = _from_version_1(data)
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
        """Every setting, the method's parameters with their defaults filled in."""
        data = asdict(self)
        if self.method in self._choices():
            data["params"] = self.full_params()
        return data

    def _choices(self) -> tuple[str, ...]:
        return MERGE_CHOICES if self.action == "merge" else NEGATE_CHOICES

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def validate(self) -> RunConfig:
        """Check every setting's range; messages say which setting and what to use instead."""
        if self.version != CONFIG_VERSION:
            raise InputError(
                f"run config version must be {CONFIG_VERSION} (or 1, converted), the formats this "
                "explorer reads; download the config again from the page"
            )
        _choice("source", self.source, SOURCE_KINDS)
        _choice("paradigm", self.paradigm, PARADIGMS)
        _choice("action", self.action, ACTIONS)
        _choice("method", self.method, self._choices())
        _choice("importance", self.importance, IMPORTANCE_CHOICES)
        _choice("split", self.split, SPLIT_CHOICES)
        if self.source == "manifest" and not self.manifest:
            raise InputError("source is 'manifest' but no manifest path is set; give its path")
        self.params = _checked_params(self.params, page_params(self.action, self.method))
        check_int("Ns (samples)", self.samples, 1, SAMPLES, echo=False)
        check_int("seed", self.seed, 0, SEED, echo=False)
        if self.max_samples is not None:
            check_int("max_samples", self.max_samples, 1, EVAL_IMAGES, echo=False)
        if len(self.tasks) > LIST_VALUES:
            raise InputError(f"a run config names at most {LIST_VALUES} tasks; name fewer")
        if self.action == "negate" and not self.target:
            raise InputError("a forgetting run needs a target task; pick the task to forget")
        return self

    def param(self, name: str) -> Any:
        """The value of one of the method's parameters (its default when not set)."""
        for p in page_params(self.action, self.method):
            if p.name == name:
                return self.params.get(name, p.default)
        raise KeyError(name)

    def full_params(self) -> dict[str, Any]:
        """Every parameter of the method (and of its side input), defaults filled in."""
        return {
            p.name: self.params.get(p.name, p.default)
            for p in page_params(self.action, self.method)
        }

    def method_params(self) -> dict[str, Any]:
        """The keyword arguments of the method itself (without the side input's settings)."""
        names = {p.name for p in method_spec(self.action, self.method).params}
        return {k: v for k, v in self.full_params().items() if k in names}

    def reads_importance(self) -> bool:
        """Whether the method's side input is made from importances (then importance, Ns and
        seed matter)."""
        return method_spec(self.action, self.method).needs not in (None, "adaptation")

    def settings_text(self) -> str:
        """``name=value`` of every setting the method reads, for titles and tables."""
        parts = [f"{name}={value}" for name, value in self.full_params().items()]
        if self.reads_importance():
            parts += [f"importance={self.importance}", f"samples={self.samples}"]
        return ", ".join(parts)

    def key(self, p_rank: int | None = None) -> tuple:
        """Cache key: the source, the tasks, and only the settings this method reads.

        ``p_rank`` replaces p when the caller knows that only the quantile's lower rank matters
        (STA fusion: with N tasks, p values with the same floor((N-1) p) give the same masks).
        """
        params = tuple(
            (name, _hashable(value)) if name != "p" or p_rank is None else ("p_rank", p_rank)
            for name, value in self.full_params().items()
        )
        side = (self.importance, self.samples, self.seed) if self.reads_importance() else ()
        return (
            self.source_key(),
            self.action,
            tuple(self.tasks),
            self.target,
            self.method,
            params,
            side,
            self.split,
            self.max_samples,
        )

    def source_key(self) -> tuple:
        if self.source == "manifest":
            return ("manifest", str(self.manifest))
        return ("zoo", self.paradigm, self.zoo_root)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _checked_params(params: dict[str, Any], declared: tuple[Param, ...]) -> dict[str, Any]:
    """Every declared parameter checked (defaults filled in); a value is never repeated in a
    message, and a parameter without a bound is held to the size limits of its kind."""
    names = [p.name for p in declared]
    position = next((i for i, name in enumerate(params) if name not in names), None)
    if position is not None:
        raise InputError(
            f"run config parameter number {position + 1} is not a parameter of this method; "
            f"its parameters: {', '.join(names) or 'none'}"
        )
    return {p.name: _checked(p, params.get(p.name, p.default)) for p in declared}


def _checked(param: Param, value: Any) -> Any:
    if param.per_task and isinstance(value, list):
        if len(value) > LIST_VALUES:
            raise InputError(f"{param.name} has more than {LIST_VALUES} values; give fewer")
        return [_checked(param, v) for v in value]
    value = param.check(value, echo=False)
    if param.kind == "float" and (param.low is None or param.high is None):
        check_float(param.name, value, -COEFFICIENT, COEFFICIENT, echo=False)
    if param.kind == "int" and param.high is None:
        check_int(param.name, value, -SEED, SEED, echo=False)
    return value


_INT_FIELDS = {"version", "samples", "seed"}


def _coerce(name: str, value: Any) -> Any:
    """JSON numbers arrive as int or float; anything else of the wrong type is named."""
    if name in _INT_FIELDS or (name == "max_samples" and value is not None):
        whole = isinstance(value, int | float) and not isinstance(value, bool)
        if not whole or not math.isfinite(value) or value != int(value):
            raise InputError(f"run config setting {name!r} must be a whole number")
        return int(value)
    if name == "params":
        if not isinstance(value, dict) or len(value) > LIST_VALUES:
            raise InputError("run config setting 'params' must be an object of name: value")
        return dict(value)
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


#: version 1 kept one field per hyperparameter, shared between methods, with these defaults
_V1_DEFAULTS = {
    "p": 0.8,
    "k": 0.2,
    "lam": 0.3,
    "drop_rate": 0.9,
    "agreement": 2,
    "tall_lambda": 0.4,
}
#: which version-1 fields each (action, method) read, and their names now
_V1_READS: dict[tuple[str, str], dict[str, str]] = {
    ("merge", "sta"): {"p": "p"},
    ("merge", "task_arithmetic"): {"lam": "lam"},
    ("merge", "ties"): {"k": "keep", "lam": "lam"},
    ("merge", "dare"): {"drop_rate": "dare_rate", "lam": "lam", "seed": "dare_seed"},
    ("merge", "consensus"): {"agreement": "agreement", "tall_lambda": "tall_lambda", "lam": "lam"},
    ("merge", "talos_mask"): {"k": "sparsity", "lam": "lam"},
    ("negate", "sta"): {"p": "p"},
    ("negate", "task_arithmetic"): {"lam": "lam"},
}
_V1_METHODS = {"talos_mask": "masked_arithmetic"}


def _from_version_1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 config (one field per hyperparameter) in today's form."""
    data = dict(data)
    old = {name: data.pop(name) for name in _V1_DEFAULTS if name in data}
    for name, value in old.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"run config setting {name!r} must be a number")
    action, method = data.get("action", "merge"), data.get("method", "sta")
    named = isinstance(action, str) and isinstance(method, str)  # else the checks below say so
    reads = _V1_READS.get((action, method), {}) if named else {}
    values = {**_V1_DEFAULTS, **old, "seed": data.get("seed", 0)}
    data["params"] = {new: values[name] for name, new in reads.items()}
    if isinstance(method, str):
        data["method"] = _V1_METHODS.get(method, method)
    data["version"] = CONFIG_VERSION
    return data


def load_config(path: str | Path) -> RunConfig:
    """Read a run config file written by the page (or by hand)."""
    return RunConfig.from_json(read_text_file(path, "run config"))
