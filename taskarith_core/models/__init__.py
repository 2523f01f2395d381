"""The model-aware engine: open_clip glue, evaluation, model-based importance and their disk cache.

Submodules are imported explicitly (``from taskarith_core.models.evaluation import ...``) so that
``import taskarith_core`` stays fast: open_clip alone takes seconds to import.
"""

from __future__ import annotations

__all__: list[str] = []
