"""Analyses the papers draw, each a function returning a pandas DataFrame (figures in
:mod:`.figures`, CLI in ``taskarith_core.cli.analyse_cmds``):

- :mod:`.xi`: disentanglement error xi(alpha1, alpha2) (attention-only paper Eq. 2, TaLoS Eq. 10);
- :mod:`.kernel`: kernel-behaviour test by post-hoc linearisation (attention-only paper 3.2);
- :mod:`.geometry`: task-vector cosine, mask IoU, selection rates, function localisation;
- :mod:`.sweeps` / :mod:`.negation`: accuracy against a method's parameter, negation with the
  control rule, scaling with the number of tasks, stability against Ns;
- :mod:`.protocol`: the papers' addition / negation protocols (chosen on val, reported on test).
"""

from __future__ import annotations

from .geometry import (
    localisation_matrix,
    mask_iou,
    rates_table,
    sta_masks,
    talos_masks,
    task_vector_cosine,
)
from .kernel import kernel_test
from .negation import negation_sweep
from .protocol import addition_protocol, negation_protocol
from .stability import importance_stability
from .sweeps import METHODS, accuracy_sweep, task_count_scaling
from .xi import XI_PRESETS, XiGrid, disentanglement_grid, xi_summary

__all__ = [
    "METHODS",
    "XI_PRESETS",
    "XiGrid",
    "accuracy_sweep",
    "addition_protocol",
    "disentanglement_grid",
    "importance_stability",
    "kernel_test",
    "localisation_matrix",
    "mask_iou",
    "negation_protocol",
    "negation_sweep",
    "rates_table",
    "sta_masks",
    "talos_masks",
    "task_count_scaling",
    "task_vector_cosine",
    "xi_summary",
]
