"""Feature-based OOD detectors (Mahalanobis, KNN, Kernel PCA): their scores are the papers' formulas,
computed by hand here on features planted in the input, and the fitting contract holds."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from bastion.core import ConfigError, DataError, Victim, make_generator
from bastion.defenses.detect.ood import KNN, MSP, KernelPCA, Mahalanobis

D = 6


def _victim() -> Victim:
    """Penultimate features (the input of the last Linear) = the input, flattened."""
    return Victim(nn.Sequential(nn.Flatten(), nn.Linear(D, 3)), input_shape=(1, 2, 3), num_classes=3)


def _data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Three classes around different centres, inside [0, 1]."""
    gen = make_generator(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[0.2] * D, [0.5] * D, [0.8] * D])
    centres[1, :3] = 0.3
    x = (centres[y] + 0.05 * torch.randn(n, D, generator=gen)).clamp(0, 1)
    return x.view(n, 1, 2, 3), y


def test_mahalanobis_is_the_distance_to_the_closest_class_under_the_tied_covariance() -> None:
    x, y = _data(300, 0)
    q, _ = _data(20, 1)
    det = Mahalanobis(ridge=0.0)
    state = det.fit(_victim(), x, y)
    h = x.flatten(1).double()
    means = torch.stack([h[y == c].mean(0) for c in range(3)])
    centred = h - means[y]
    inv = torch.linalg.inv(centred.T @ centred / h.shape[0])
    hq = q.flatten(1).double()
    want = torch.stack([-(((hq - m) @ inv) * (hq - m)).sum(1) for m in means], dim=1).amax(1)
    torch.testing.assert_close(det._score(_victim(), q, state), want)


def test_knn_is_minus_the_kth_neighbour_distance_on_the_unit_sphere() -> None:
    x, y = _data(200, 0)
    q, _ = _data(15, 1)
    bank = x.flatten(1) / x.flatten(1).norm(dim=1, keepdim=True)
    hq = q.flatten(1) / q.flatten(1).norm(dim=1, keepdim=True)
    want = -torch.cdist(hq, bank).sort(dim=1).values[:, 4]
    det = KNN(k=5)
    torch.testing.assert_close(det._score(_victim(), q, det.fit(_victim(), x, y)).float(), want, atol=1e-5, rtol=0)
    # k = 1 on the training images themselves: each is its own nearest neighbour
    one = KNN(k=1)
    assert float(one._score(_victim(), x, one.fit(_victim(), x, y)).abs().max()) < 1e-3
    with pytest.raises(DataError, match="k = 500"):
        KNN(k=500).fit(_victim(), x, y)


def test_kernel_pca_keeps_the_share_and_a_full_basis_reconstructs_everything() -> None:
    x, y = _data(300, 0)
    q, _ = _data(30, 1)
    full = KernelPCA(share=1.0)
    assert float(full._score(_victim(), q, full.fit(_victim(), x, y)).abs().max()) < 1e-9  # nothing left out
    det = KernelPCA(share=0.85)
    rff, mean, u = det.fit(_victim(), x, y)
    assert rff is None
    h = x.flatten(1).double()
    phi = h / h.norm(dim=1, keepdim=True) - mean
    values = torch.linalg.eigvalsh(phi.T @ phi).flip(0)
    kept = values[: u.shape[1]].sum() / values.sum()
    assert kept >= 0.85 and values[: u.shape[1] - 1].sum() / values.sum() < 0.85  # the fewest that hold 85%
    # a point off the training features' main directions reconstructs worse
    off = torch.zeros(1, 1, 2, 3)
    off.view(-1)[0] = 1.0
    scores = det._score(_victim(), torch.cat([x[:1], off]), (rff, mean, u))
    assert scores[0] > scores[1]


def test_random_fourier_features_approximate_the_cosine_gaussian_kernel() -> None:
    x, y = _data(60, 0)
    det = KernelPCA(kernel="cosine-gaussian", n_features=2048, gamma=2.0, seed=0)
    rff, _, _ = det.fit(_victim(), x, y)
    h = x.flatten(1).double()
    h = h / h.norm(dim=1, keepdim=True)
    phi = KernelPCA._map(h, rff)
    exact = torch.exp(-2.0 * torch.cdist(h, h).square())
    assert float((phi @ phi.T - exact).abs().mean()) < 0.03  # Monte Carlo error about 1 / sqrt(M)
    again = KernelPCA(kernel="cosine-gaussian", n_features=2048, seed=0).fit(_victim(), x, y)[0]
    assert torch.equal(again[0], rff[0])  # seeded


def test_fitting_contract() -> None:
    x, y = _data(30, 0)
    assert MSP().fit(_victim(), x, y) is None  # output-based: nothing to learn
    for det in (Mahalanobis(), KNN(k=3), KernelPCA()):
        with pytest.raises(ConfigError, match="call fit"):
            det.run(_victim(), x, x)
        with pytest.raises(DataError, match="y_train must be"):
            det.fit(_victim(), x, y[:-1])
    with pytest.raises(ConfigError):
        KernelPCA(share=0.0)
    with pytest.raises(ConfigError):
        KernelPCA(kernel="linear")  # type: ignore[arg-type]
    assert math.isfinite(float(Mahalanobis().run(_victim(), x, x, state=Mahalanobis().fit(_victim(), x, y)).auroc))
