"""The embedded model zoo: a small CLIP in open_clip's architecture, its tasks, three paradigms.

``load_zoo(paradigm)`` opens the shipped zoo (``assets/zoo``) as a ModelSource;
``build_zoo(out_dir, spec)`` re-creates one from nothing (``python -m taskarith_core zoo build``).
"""

from __future__ import annotations

from .build import MINI_SPEC, ZOO_SPEC, ZooSpec, build_zoo
from .source import PARADIGMS, ZOO_ROOT, ZooSource, load_zoo

__all__ = [
    "MINI_SPEC",
    "PARADIGMS",
    "ZOO_ROOT",
    "ZOO_SPEC",
    "ZooSource",
    "ZooSpec",
    "build_zoo",
    "load_zoo",
]
