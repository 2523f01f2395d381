"""Iso-C and Iso-CTS (Marczak et al., ICML 2025): merging with an isotropic spectrum.

Iso-C (Sec. 4.1): for each weight matrix, the task-arithmetic sum Delta = sum_t tau_t = U S V^T is
replaced by sigma_bar U V^T with sigma_bar the mean singular value, flattening the spectrum so no
direction dominates (Eq. 7). Iso-CTS (Sec. 4.2) keeps the top ``common`` fraction of Delta's
singular directions as the common subspace, gives each task the top directions of its own task
vector after projecting the common subspace out (Eq. 8-10), orthogonalises the union (Eq. 11) and
again uses one mean singular value (Eq. 12). Tensors that are not 2-D get the mean task vector.
The merged update is scaled by alpha. The index arithmetic (how many directions each task gets)
follows the authors' code as FusionBench ships it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._svd import orthogonalise, svd_merge, update_scaling
from .params import Param
from .spec import MethodSpec

__all__ = ["CTS_SPEC", "SPEC", "iso_c_matrix", "iso_c_merge", "iso_cts_matrix", "iso_cts_merge"]


def _sum(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    total = taus[0].clone()
    for tau in taus[1:]:
        total += tau
    return total


def _svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD; in float64 when LAPACK's divide-and-conquer does not converge (a projected
    matrix with many equal, near-zero singular values can make it fail)."""
    try:
        return torch.linalg.svd(matrix, full_matrices=False)
    except torch.linalg.LinAlgError:
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        return u.to(matrix.dtype), s.to(matrix.dtype), vh.to(matrix.dtype)


def iso_c_matrix(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """sigma_bar U V^T of the summed task vectors of one weight matrix (Eq. 7)."""
    u, s, vh = torch.linalg.svd(_sum(taus), full_matrices=False)
    return (u * s.mean()) @ vh


def iso_cts_matrix(taus: Sequence[torch.Tensor], common: float) -> torch.Tensor:
    """The Iso-CTS update of one weight matrix (Eq. 8-12)."""
    n_tasks, rank = len(taus), min(taus[0].shape)
    n_common = int(rank * common)
    n_common = rank - round((rank - n_common) / n_tasks) * n_tasks  # task part divisible by T
    per_task = int((rank - n_common) / n_tasks)
    u, s, vh = torch.linalg.svd(_sum(taus), full_matrices=False)
    u_c, s_c, vh_c = u[:, :n_common], s[:n_common], vh[:n_common, :]
    u_all, s_all, vh_all = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(vh)
    for index, tau in enumerate(taus):
        specific = tau - (u_c @ u_c.T) @ tau  # project the common subspace out (Eq. 9)
        u_t, s_t, vh_t = _svd(specific)
        span = slice(index * per_task, (index + 1) * per_task)
        u_all[:, span], s_all[span], vh_all[span, :] = (
            u_t[:, :per_task],
            s_t[:per_task],
            vh_t[:per_task, :],
        )
    common_span = slice(n_tasks * per_task, n_tasks * per_task + n_common)
    u_all[:, common_span], s_all[common_span], vh_all[common_span, :] = u_c, s_c, vh_c
    return (orthogonalise(u_all) * s_all.mean()) @ orthogonalise(vh_all)


def iso_c_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    lam: float = 1.0,
) -> StateDict:
    """theta = theta_pre + alpha * (Iso-C update per weight matrix, mean task vector elsewhere)."""
    return svd_merge(pretrained, finetuned, iso_c_matrix, lam)


def iso_cts_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    lam: float = 1.0,
    common: float = 0.8,
) -> StateDict:
    """theta = theta_pre + alpha * (Iso-CTS update per weight matrix, mean elsewhere)."""
    return svd_merge(pretrained, finetuned, lambda taus: iso_cts_matrix(taus, common), lam)


SPEC = MethodSpec(
    iso_c_merge,
    (update_scaling(),),
    "Iso-C: the summed task vectors with a flat (isotropic) spectrum",
    "Marczak et al., No Task Left Behind: Isotropic Model Merging (ICML 2025), Eq. 7",
    "Iso-C",
    linear_in_lambda=True,
    streams="tensor",
)
CTS_SPEC = MethodSpec(
    iso_cts_merge,
    (
        update_scaling(),
        Param(
            "common",
            "float",
            0.8,
            "fraction of each matrix's singular directions shared by all tasks (the rest are "
            "split between the tasks)",
            symbol="k",
            low=0.0,
            high=1.0,
            step=0.05,
        ),
    ),
    "Iso-CTS: common and task-specific subspaces, isotropic spectrum",
    "Marczak et al., No Task Left Behind: Isotropic Model Merging (ICML 2025), Eq. 8-12",
    "Iso-CTS",
    linear_in_lambda=True,
    streams="tensor",
)
