"""TSV-M (Gargiulo et al., CVPR 2025): task singular vectors, whitened, then summed.

For each weight matrix (2-D tensor) and T tasks: every task vector is compressed to its top
``k = int(r / T)`` singular triplets (r = min(rows, columns); Sec. 3, "TSV-C"); the kept U_t, S_t,
V_t are concatenated into U = [U_1 .. U_T], S, V; the interference between tasks is removed by
whitening U and V, i.e. replacing each by its nearest orthonormal matrix (Procrustes: U_perp =
P Q^T for U = P Sigma Q^T; Eq. 6-7); the merged update is U_perp diag(S) V_perp^T, scaled by alpha
(Algorithm 1). Other tensors (biases, norms, embeddings that are not 2-D) are averaged. This
follows the authors' procedure as FusionBench ships it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..taskvec import StateDict
from ._svd import orthogonalise, svd_merge, update_scaling
from .spec import MethodSpec

__all__ = ["SPEC", "tsv_matrix", "tsv_merge"]


def tsv_matrix(taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """The TSV-M merged update of one weight matrix (before alpha)."""
    n_tasks = len(taus)
    u_all = s_all = vh_all = None
    k = 0
    for index, tau in enumerate(taus):
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        if u_all is None:
            u_all, s_all, vh_all = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(vh)
            k = int(s.shape[0] * (1 / n_tasks))
        span = slice(index * k, (index + 1) * k)
        u_all[:, span], s_all[span], vh_all[span, :] = u[:, :k], s[:k], vh[:k, :]
    return torch.linalg.multi_dot((orthogonalise(u_all), torch.diag(s_all), orthogonalise(vh_all)))


def tsv_merge(
    pretrained: Mapping[str, torch.Tensor],
    finetuned: Sequence[Mapping[str, torch.Tensor]],
    *,
    lam: float = 1.0,
) -> StateDict:
    """theta = theta_pre + alpha * (TSV-M update per weight matrix, mean task vector elsewhere)."""
    return svd_merge(pretrained, finetuned, tsv_matrix, lam)


SPEC = MethodSpec(
    tsv_merge,
    (update_scaling(),),
    "TSV-M: per-matrix task singular vectors, whitened and summed",
    "Gargiulo et al., Task Singular Vectors: Reducing Task Interference in Model Merging "
    "(CVPR 2025), Algorithm 1",
    "TSV-M",
    linear_in_lambda=True,
    streams="tensor",
)
