"""`mahalanobis`: distance to the closest class Gaussian in feature space (Lee et al., NeurIPS 2018)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.core.errors import DataError
from bastion.core.params import param
from bastion.core.victim import Victim
from bastion.defenses.detect.ood.base import OODDetector, register_detector

__all__ = ["Mahalanobis"]


@register_detector("mahalanobis")
@dataclass(frozen=True, kw_only=True)
class Mahalanobis(OODDetector):
    """Mahalanobis score. Lee, Lee, Lee, Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
    Samples and Adversarial Attacks", NeurIPS 2018, arXiv 1807.03888; reference
    `pokaxpoka/deep_Mahalanobis_detector` (`lib_generation.py`, `sample_estimator`).

    Fitted on the training images: penultimate features h (`Victim.features`, the input of the last
    `nn.Linear`: already spatially pooled or flattened), the mean μ_c of each class, and one covariance Σ
    shared by the classes (tied: of the class-centred features). Score: max_c −(h − μ_c)ᵀ Σ⁻¹ (h − μ_c),
    with `ridge`·I added to Σ before the Cholesky factorisation so that a singular covariance stays
    invertible. The paper's input pre-processing (a step along the score's gradient) and its logistic
    ensemble over layers (fitted on OOD validation data, which an audit does not have) are not offered:
    this is the score of the last layer, as the paper's ablation reports it.
    """

    fits = True

    ridge: float = param(1e-6, ge=0, help="added to the covariance's diagonal before inverting it")

    def _fit(self, victim: Victim, x_train: Tensor, y_train: Tensor) -> Any:
        h = victim.features(x_train).double().cpu()
        classes = torch.unique(y_train)
        means = torch.stack([h[y_train == c].mean(dim=0) for c in classes])
        centred = h - means[torch.searchsorted(classes, y_train)]
        cov = centred.T @ centred / h.shape[0] + self.ridge * torch.eye(h.shape[1], dtype=h.dtype)
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info):
            raise DataError("mahalanobis: the feature covariance is not positive definite; raise ridge")
        return means, chol

    def _score(self, victim: Victim, x: Tensor, state: Any) -> Tensor:
        means, chol = state
        h = victim.features(x).double().cpu()
        # (h - mu)^T Sigma^-1 (h - mu) = |L^-1 (h - mu)|^2 with Sigma = L L^T, one class at a time: memory
        # N x D, not N x K x D (10,000 inputs, 100 classes and 512 features would be 4 GB at once)
        best = torch.full((h.shape[0],), math.inf, dtype=h.dtype)
        for mu in means:
            z = torch.linalg.solve_triangular(chol, (h - mu).T, upper=False)
            best = torch.minimum(best, z.square().sum(dim=0))
        return -best
