"""Training-set inspectors: spectral signatures and activation clustering. Known answers on features
planted by hand (the removal counts, which images go, what each rule spares), and the papers' claim on a
BadNets model of mnist5k: at least 80% of the poisons removed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.core import ConfigError, Victim
from bastion.core.registry import DEFENSES
from bastion.defenses.detect.backdoor import ActivationClustering, SpectralSignatures

D = 16  # features = the flattened 4 x 4 input
N_CLEAN, N_PLANTED = 60, 20  # class 0: 60 clean + 20 planted; classes 1 and 2: 60 clean each


def _victim() -> Victim:
    """A model whose penultimate features (the input of its last Linear) are its input, flattened."""
    return Victim(nn.Sequential(nn.Flatten(), nn.Linear(D, 3)), input_shape=(1, 4, 4), num_classes=3)


def _blob(n: int, centre: float, gen: torch.Generator, shift: Tensor | None = None) -> Tensor:
    x = centre + 0.05 * torch.randn(n, D, generator=gen)
    if shift is not None:
        x = x + shift
    return x.clamp(0, 1).view(n, 1, 4, 4)


def _planted() -> tuple[Tensor, Tensor, Tensor]:
    """Class 0 hides 20 images moved 0.4 along the first coordinate; class 1 is one blob; class 2 two equal
    blobs (a natural split that is no backdoor). Returns (x, y, planted flags)."""
    gen = torch.Generator().manual_seed(0)
    e1 = torch.zeros(D)
    e1[0] = 0.4
    half = torch.zeros(D)
    half[1:9] = 0.3
    x = torch.cat(
        [
            _blob(N_CLEAN, 0.3, gen),
            _blob(N_PLANTED, 0.3, gen, e1),
            _blob(N_CLEAN, 0.5, gen),
            _blob(N_CLEAN // 2, 0.4, gen),
            _blob(N_CLEAN // 2, 0.4, gen, half),
        ]
    )
    y = torch.tensor([0] * (N_CLEAN + N_PLANTED) + [1] * N_CLEAN + [2] * N_CLEAN)
    planted = torch.zeros(y.numel(), dtype=torch.bool)
    planted[N_CLEAN : N_CLEAN + N_PLANTED] = True
    return x, y, planted


def _removed(result_extra: dict, n: int) -> Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[result_extra["removed"]] = True
    return mask


def test_spectral_scores_are_the_squared_projection_on_the_top_singular_vector() -> None:
    x, y, planted = _planted()
    r = SpectralSignatures().run(_victim(), x, y, planted)
    feats = x.flatten(1).double()[y == 0]
    centred = feats - feats.mean(dim=0)
    v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    torch.testing.assert_close(r.scores[y == 0], (centred @ v).square())
    top = torch.argsort(r.scores[y == 0], descending=True)[:N_PLANTED]
    assert bool(planted[y == 0][top].all())  # the planted images lie along v, far out: class 0's top scores


def test_spectral_uncentred_scores_are_the_tf_codes() -> None:
    # MadryLab's compute_corr.py: v from the centred features, the score |<r, v>| on the uncentred ones
    x, y, planted = _planted()
    r = SpectralSignatures(centered=False).run(_victim(), x, y, planted)
    feats = x.flatten(1).double()[y == 0]
    v = torch.linalg.svd(feats - feats.mean(dim=0), full_matrices=False).Vh[0]
    torch.testing.assert_close(r.scores[y == 0], (feats @ v).abs())
    top = torch.argsort(r.scores[y == 0], descending=True)[:N_PLANTED]
    assert bool(planted[y == 0][top].all())  # within its class it still ranks the planted images first


def test_spectral_removal_counts_follow_the_rule_and_the_cap() -> None:
    x, y, planted = _planted()
    n = y.numel()
    # worst case: ceil(1.5 * eps * N) from every class, capped at half a class
    r = SpectralSignatures(eps=0.05).run(_victim(), x, y, planted)
    want = 15  # 1.5 * 0.05 * 200 = 15.000000000000002 in floating point: 15 are meant
    assert r.extra["removed_per_class"] == {"0": want, "1": want, "2": want}
    removed = _removed(r.extra, n)
    assert bool(planted[removed & (y == 0)].all())  # class 0's 15 removed are all planted
    # eps read as each class's share: ceil(1.5 * 0.2 * n_c): 24 of class 0 (every planted image), 18 of the others
    r = SpectralSignatures(eps=0.2, removal="class-share").run(_victim(), x, y, planted)
    assert r.extra["removed_per_class"] == {"0": 24, "1": 18, "2": 18}
    assert r.extra["poisons_removed"] == 1.0
    # 1.5 * 0.051 * 200 = 15.3: the port's int() keeps 15; the paper's rule rounds 6.12 and 4.59 up
    assert SpectralSignatures(eps=0.051).run(_victim(), x, y, planted).extra["removed_per_class"] == {
        "0": 15,
        "1": 15,
        "2": 15,
    }
    r = SpectralSignatures(eps=0.051, removal="class-share").run(_victim(), x, y, planted)
    assert r.extra["removed_per_class"] == {"0": 7, "1": 5, "2": 5}
    # the cap: never more than half a class
    r = SpectralSignatures(eps=0.9).run(_victim(), x, y, planted)
    assert r.extra["removed_per_class"] == {"0": 40, "1": 30, "2": 30}


def test_activation_clustering_rules() -> None:
    x, y, planted = _planted()
    n = y.numel()
    # relative-size: class 0 splits 60 / 20 (25% < 35%): exactly the planted images go; class 2's even split stays
    r = ActivationClustering().run(_victim(), x, y, planted)
    assert torch.equal(_removed(r.extra, n), planted)
    assert r.extra["classes"]["0"]["smaller_share"] == pytest.approx(0.25)
    assert r.extra["classes"]["2"]["smaller_share"] == pytest.approx(0.5)
    assert r.auroc == 1.0
    # smaller: a cluster of every class goes, class 2's 30 included
    r = ActivationClustering(rule="smaller").run(_victim(), x, y, planted)
    removed = _removed(r.extra, n)
    assert bool(removed[planted].all()) and int(removed[y == 2].sum()) == 30 and int(removed[y == 1].sum()) > 0
    # silhouette: the planted split is real (well separated) and small
    r = ActivationClustering(rule="silhouette").run(_victim(), x, y, planted)
    assert torch.equal(_removed(r.extra, n), planted) and r.extra["classes"]["0"]["silhouette"] > 0.3
    # ... and a threshold above every class's silhouette spares them all
    r = ActivationClustering(rule="silhouette", silhouette_threshold=0.99).run(_victim(), x, y, planted)
    assert r.extra["removed"] == []


@pytest.mark.parametrize("seed", [0, 1])
def test_activation_clustering_with_ica(seed: int) -> None:
    # FastICA whitens every kept component to unit variance, so the one bimodal direction must not drown
    # among many noise ones: with 3 kept of these 16 dimensions the planted split is found at every seed tried
    x, y, planted = _planted()
    r = ActivationClustering(reduce="ica", dims=3, seed=seed).run(_victim(), x, y, planted)
    assert torch.equal(_removed(r.extra, y.numel()), planted)
    assert r.extra["classes"]["0"]["smaller_share"] == pytest.approx(0.25)


def test_seeded_and_registered() -> None:
    x, y, planted = _planted()
    for cls in (SpectralSignatures, ActivationClustering):
        a, b = cls(seed=3).run(_victim(), x, y, planted), cls(seed=3).run(_victim(), x, y, planted)
        assert torch.equal(a.scores, b.scores) and a.extra["removed"] == b.extra["removed"]
        assert DEFENSES.get(cls.name) is cls and cls.family == "backdoor-data"


@pytest.mark.parametrize(
    ("cls", "bad"),
    [
        (SpectralSignatures, {"eps": 0.0}),
        (SpectralSignatures, {"eps": 1.0}),
        (SpectralSignatures, {"removal": "all"}),
        (ActivationClustering, {"dims": 0}),
        (ActivationClustering, {"reduce": "tsne"}),
        (ActivationClustering, {"rule": "biggest"}),
        (ActivationClustering, {"size_threshold": 0.0}),
        (ActivationClustering, {"size_threshold": 0.6}),
        (ActivationClustering, {"silhouette_threshold": 1.5}),
    ],
)
def test_bad_parameters(cls: type, bad: dict[str, Any]) -> None:
    (field,) = bad
    with pytest.raises(ConfigError, match=f"{cls.name}: {field} must be"):
        cls(**bad)


@pytest.mark.parametrize("name", ["spectral-signatures", "activation-clustering"])
def test_removes_the_badnets_poisons_of_mnist5k(badnets_mnist5k: Any, name: str) -> None:
    # Tran et al. and Chen et al.: the poisons of the target class stand out in the last hidden layer. Measured
    # on this model: both remove all 200 poisons (AUROC 0.999 and 1.000); spectral signatures, told only that
    # 5% of the set may be poisoned, would remove 300 from every class, and the cap stops it at half of each
    # (1,798 clean images, 47%); activation clustering none (class 0 splits 400 / 200, the others no smaller
    # than 37%).
    b = badnets_mnist5k
    flags = torch.zeros(b.poisoned.y.numel(), dtype=torch.bool)
    flags[b.poisoned.index] = True
    r = DEFENSES.get(name)().run(b.victim, b.poisoned.x, b.poisoned.y, flags)
    assert r.extra["poisons_removed"] >= 0.8, r.extra["poisons_removed"]
    assert r.auroc >= 0.95
    if name == "activation-clustering":
        assert r.extra["clean_removed"] <= 0.05
    else:  # the cap binds every class: exactly half of each goes
        assert r.extra["removed_per_class"] == {
            str(c): n // 2 for c, n in enumerate(torch.bincount(b.poisoned.y).tolist())
        }
