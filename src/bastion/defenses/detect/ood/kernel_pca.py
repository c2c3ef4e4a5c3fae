"""`kernel-pca`: reconstruction error after PCA in an explicit kernel feature space (Fang et al., NeurIPS 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from bastion.core.params import param
from bastion.core.random import make_generator
from bastion.core.victim import Victim
from bastion.defenses.detect.ood.base import OODDetector, register_detector
from bastion.defenses.detect.ood.knn import unit

__all__ = ["KernelPCA"]

_SHARE = {"cosine": 0.85, "cosine-gaussian": 0.8}  # the reference's CIFAR-10 (ResNet-18, cross-entropy) settings


@register_detector("kernel-pca")
@dataclass(frozen=True, kw_only=True)
class KernelPCA(OODDetector):
    """Kernel PCA. Fang, Tao, Lv, et al., "Kernel PCA for Out-of-Distribution Detection", NeurIPS 2024,
    arXiv 2402.02949; reference `fanghenshaometeor/ood-kernel-pca` (`CoP_CoRP_c10.py`).

    PCA on the raw penultimate features separates in- from out-of-distribution inputs poorly; after an
    explicit non-linear map Φ it does, at the cost of a d x d eigen-decomposition instead of an n x n
    kernel matrix. Maps: `kernel="cosine"` (the paper's CoP) Φ(h) = h / |h|; `"cosine-gaussian"`
    (CoRP) random Fourier features of the Gaussian kernel exp(-gamma |a - b|^2) on h / |h|,
    Φ = sqrt(2 / M) cos(W h / |h| + b), W ~ N(0, 2 gamma), b ~ U[0, 2 pi), drawn once from `seed`.
    Fitted on the training images' features: the mean of Φ, then the top q eigenvectors U_q of the
    centred Φ's scatter matrix, q the fewest whose eigenvalues hold a share `share` of the total (capped
    at d: the reference's search stops one short and silently keeps d - 1 when the share is never
    reached). Score: minus the reconstruction error |Φ~ - U_q U_qᵀ Φ~| of the centred Φ~.

    Defaults are the reference's for CIFAR-10 (ResNet-18, cross-entropy): share 0.85 for the cosine map;
    0.8, gamma 2 and M = 2,048 for cosine-Gaussian. The journal version's confidence weighting and its
    fusion with other scores are not offered.
    """

    fits = True

    kernel: Literal["cosine", "cosine-gaussian"] = param("cosine", help="cosine (CoP) or cosine-gaussian (CoRP)")
    share: float | None = param(
        None, gt=0, le=1, help="eigenvalue share the kept components hold; None: 0.85 cosine, 0.8 cosine-gaussian"
    )
    gamma: float = param(2.0, gt=0, help="cosine-gaussian: the Gaussian kernel's gamma")
    n_features: int = param(2048, ge=1, help="cosine-gaussian: random Fourier features M")
    seed: int = param(0, ge=0, help="cosine-gaussian: seed of the random features")

    def _fit(self, victim: Victim, x_train: Tensor, y_train: Tensor) -> Any:
        h = unit(victim.features(x_train).double().cpu())
        rff = None
        if self.kernel == "cosine-gaussian":
            gen = make_generator(self.seed)
            w = torch.randn(h.shape[1], self.n_features, generator=gen, dtype=torch.float64) * math.sqrt(2 * self.gamma)
            b = torch.rand(self.n_features, generator=gen, dtype=torch.float64) * 2 * math.pi
            rff = (w, b)
        phi = self._map(h, rff)
        mean = phi.mean(dim=0)
        centred = phi - mean
        values, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        share = _SHARE[self.kernel] if self.share is None else self.share
        cumulative = values.cumsum(0) / values.sum()
        q = min(int((cumulative < share - 1e-12).sum()) + 1, values.numel())
        return rff, mean, vectors[:, :q]

    def _score(self, victim: Victim, x: Tensor, state: Any) -> Tensor:
        rff, mean, u = state
        centred = self._map(unit(victim.features(x).double().cpu()), rff) - mean
        return -(centred - (centred @ u) @ u.T).norm(dim=1)

    @staticmethod
    def _map(h: Tensor, rff: tuple[Tensor, Tensor] | None) -> Tensor:
        if rff is None:
            return h
        w, b = rff
        return math.sqrt(2 / w.shape[1]) * torch.cos(h @ w + b)
