"""Real open_clip checkpoints (ViT-B/32, B/16, L/14) and local datasets, offline.

A manifest (:mod:`.manifest`) names the pretrained CLIP, one fine-tuned checkpoint per task and each
task's data; :class:`.source.ManifestSource` turns it into a ModelSource. Checkpoints are converted
once to open_clip safetensors (:mod:`.convert`, :mod:`.safe_unpickle`); the 8-task benchmark's
class names and templates are data files (:mod:`.datasets`); :mod:`.reproduce` runs the papers'
protocols and puts the published numbers (``published.csv``) beside them.

Submodules are imported explicitly: open_clip takes seconds to import.
"""

from __future__ import annotations

__all__: list[str] = []
