"""taskarith_core: the engine of the merge explorer.

Data flow: safetensors files -> state dicts -> importances -> masks -> merged state dict ->
evaluation DataFrame -> plotly figure. The page, the CLI and the tests call the same functions.

The public names below are imported on first use (PEP 562), so ``import taskarith_core.ui`` or
``taskarith_core.errors`` does not pay for torch: the page is served before the engine loads.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_EXPORTS = {
    "IMPORTANCE_METRICS": ".importance",
    "InputError": ".errors",
    "MERGE_METHODS": ".fusion",
    "NEGATION_METHODS": ".fusion",
    "add_scaled": ".taskvec",
    "compute_importance": ".importance",
    "linear_quantile": ".quantile",
    "merge": ".fusion",
    "negate": ".fusion",
    "selection_rates": ".masks",
    "sta_fusion_masks": ".masks",
    "sta_negation_mask": ".masks",
    "stream_masks": ".streaming",
    "stream_merge": ".streaming",
    "stream_negate": ".streaming",
    "task_vector": ".taskvec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'taskarith_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
