"""taskarith_core: the engine of the merge explorer.

Data flow: safetensors files -> state dicts -> importances -> masks -> merged state dict ->
evaluation DataFrame -> plotly figure. The page, the CLI and the tests call the same functions.
"""

from .errors import InputError
from .fusion import MERGE_METHODS, NEGATION_METHODS, merge, negate
from .importance import IMPORTANCE_METRICS, compute_importance
from .masks import selection_rates, sta_fusion_masks, sta_negation_mask
from .quantile import linear_quantile
from .streaming import stream_masks, stream_merge, stream_negate
from .taskvec import add_scaled, task_vector

__all__ = [
    "IMPORTANCE_METRICS",
    "InputError",
    "MERGE_METHODS",
    "NEGATION_METHODS",
    "add_scaled",
    "compute_importance",
    "linear_quantile",
    "merge",
    "negate",
    "selection_rates",
    "sta_fusion_masks",
    "sta_negation_mask",
    "stream_masks",
    "stream_merge",
    "stream_negate",
    "task_vector",
]
