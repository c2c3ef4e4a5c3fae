"""Feature-based OOD detectors (Mahalanobis, KNN, Kernel PCA): their scores are the papers' formulas,
computed by hand here on features planted in the input, and the fitting contract holds."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.core import ConfigError, DataError, Victim, make_generator
from bastion.defenses.detect.ood import KNN, MSP, KernelPCA, Mahalanobis
from bastion.defenses.detect.ood.base import OODDetector

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


@pytest.mark.parametrize(
    "detector",
    [Mahalanobis(), KNN(k=5), KernelPCA(), KernelPCA(kernel="cosine-gaussian", n_features=512)],
    ids=["mahalanobis", "knn", "cop", "corp"],
)
def test_clusters_in_and_other_directions_out_rank_perfectly(detector: Any) -> None:
    """Held-out points of the training clusters all score above points pointing elsewhere (the cosine
    maps see directions only, so 'far' means another direction, not a longer vector)."""
    x, y = _data(300, 0)
    x_id, _ = _data(60, 1)
    patterns = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]])
    x_ood = (patterns.repeat(10, 1) * torch.linspace(0.5, 1.0, 40)[:, None]).view(40, 1, 2, 3)
    result = detector.run(_victim(), x_id, x_ood, state=detector.fit(_victim(), x, y))
    assert result.auroc == 1.0
    assert float(result.scores[:60].min()) > float(result.scores[60:].max())


def _kernel_pca_error(k_train: Tensor, k_query: Tensor, k_self: Tensor, share: float) -> Tensor:
    """Kernel PCA's reconstruction error by the kernel trick alone (Schoelkopf et al. 1998, Hoffmann 2007):
    centre the Gram matrix, keep its leading eigenvectors alpha_j by the same eigenvalue share, and
    |phi~(x)|^2 - sum_j (alpha_j . k~_x)^2 / lambda_j, with k~_x the centred kernel row of x."""
    row, total = k_train.mean(0), k_train.mean()
    centred = k_train - row[None] - row[:, None] + total
    values, alpha = torch.linalg.eigh(centred)
    values, alpha = values.flip(0).clamp_min(0), alpha.flip(1)
    q = int((values.cumsum(0) / values.sum() < share - 1e-12).sum()) + 1
    kq = k_query - row[None] - k_query.mean(1, keepdim=True) + total
    norm2 = k_self - 2 * k_query.mean(1) + total
    return (norm2 - ((kq @ alpha[:, :q]).square() / values[:q]).sum(1)).clamp_min(0).sqrt()


def _spearman(a: Tensor, b: Tensor) -> float:
    ra, rb = (v.argsort().argsort().double() for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


def _spread_data(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Training points skewed towards the corner, queries half alike and half uniform (to rank)."""
    gen = make_generator(seed)
    x = torch.rand(400, D, generator=gen) ** 3
    q = torch.cat([torch.rand(150, D, generator=gen) ** 3, torch.rand(150, D, generator=gen)])
    return x.view(-1, 1, 2, 3), torch.zeros(400, dtype=torch.long), q.view(-1, 1, 2, 3)


def test_cosine_map_equals_kernel_pca_by_the_kernel_trick() -> None:
    x, y, q = _spread_data(0)
    h, hq = (v.flatten(1).double() for v in (x, q))
    h, hq = h / h.norm(dim=1, keepdim=True), hq / hq.norm(dim=1, keepdim=True)
    want = -_kernel_pca_error(h @ h.T, hq @ h.T, (hq * hq).sum(1), 0.85)
    det = KernelPCA(share=0.85)
    torch.testing.assert_close(det._score(_victim(), q, det.fit(_victim(), x, y)), want, atol=1e-8, rtol=0)


def test_random_fourier_features_track_exact_cosine_gaussian_kernel_pca() -> None:
    """CoRP against kernel PCA with the exact kernel exp(-2 |a - b|^2) on unit vectors: the ranking agrees
    (Spearman 0.85 here; 0.85-0.97 over data seeds 0-4, the Monte-Carlo error of M features ~ 1/sqrt(M))
    and more features err less."""
    x, y, q = _spread_data(0)
    h, hq = (v.flatten(1).double() for v in (x, q))
    h, hq = h / h.norm(dim=1, keepdim=True), hq / hq.norm(dim=1, keepdim=True)
    exact = -_kernel_pca_error(
        torch.exp(-2 * torch.cdist(h, h).square()), torch.exp(-2 * torch.cdist(hq, h).square()), torch.ones(300), 0.8
    )
    error = {}
    for m in (256, 2048):
        det = KernelPCA(kernel="cosine-gaussian", n_features=m, seed=0)
        scores = det._score(_victim(), q, det.fit(_victim(), x, y))
        error[m] = float((scores - exact).abs().mean())
        if m == 2048:
            assert _spearman(scores, exact) > 0.8
    assert error[2048] < error[256]


def test_a_fitting_detector_must_say_what_it_learns() -> None:
    with pytest.raises(TypeError, match="must define _fit"):

        class _Forgetful(OODDetector):  # fits, but learns nothing
            fits = True

            def _score(self, victim: Victim, x: Tensor, state: object) -> Tensor:
                return x.flatten(1).mean(dim=1)
