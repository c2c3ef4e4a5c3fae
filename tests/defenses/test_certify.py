"""Randomized smoothing (Cohen et al.): the statistics, the certificates on models with known answers,
and the `gaussian` training recipe."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

from bastion.core import ConfigError, DataError, Victim
from bastion.core.progress import ProgressEvent
from bastion.core.registry import RECIPES
from bastion.data import Dataset
from bastion.defenses.certify import (
    ABSTAIN,
    Smoothed,
    betainc,
    betainc_inv,
    binomial_test_half,
    clopper_pearson_lower,
    max_radius,
)
from bastion.defenses.training import GaussianNoise
from bastion.models import build_model
from bastion.train import TrainConfig, accuracy, fit

SHAPE = (1, 4, 4)


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


# --- the statistics ----------------------------------------------------------------------------------


def test_incomplete_beta_known_values() -> None:
    # I_x(2, 3) = 6x^2 (1/2 - 2x/3 + x^2/4) integrated: 1 - (1-x)^4 - 4x(1-x)^3 (the binomial tail P(X >= 2; 4, x))
    x = torch.tensor([0.0, 0.1, 0.37, 0.9, 1.0], dtype=torch.float64)
    exact = 1 - (1 - x) ** 4 - 4 * x * (1 - x) ** 3
    assert torch.allclose(betainc(2.0, 3.0, x), exact, atol=1e-14)
    assert float(betainc(7.5, 7.5, 0.5)) == pytest.approx(0.5, abs=1e-14)  # symmetry
    # values from scipy.special.betainc
    assert float(betainc(2.5, 4.0, 0.3)) == pytest.approx(0.3521975859067672, rel=1e-12)
    assert float(betainc(200.0, 300.0, 0.41)) == pytest.approx(0.677628164772179, rel=1e-9)
    q = torch.tensor([1e-6, 0.001, 0.3, 0.999], dtype=torch.float64)
    assert torch.allclose(betainc(40.0, 3.0, betainc_inv(40.0, 3.0, q)), q, rtol=1e-10)
    with pytest.raises(ConfigError):
        betainc(0.0, 1.0, 0.5)


def test_clopper_pearson_known_values() -> None:
    # values from scipy.stats.beta.ppf(alpha, k, n - k + 1)
    k = torch.tensor([50, 990, 9000])
    n = torch.tensor([100, 1000, 10000])
    expected = torch.tensor([0.34479800642531777, 0.9830968248794375, 0.8904097336749064], dtype=torch.float64)
    got = torch.cat([clopper_pearson_lower(k[:1], n[:1], 0.001), clopper_pearson_lower(k[1:2], n[1:2], 0.05)])
    assert torch.allclose(got, expected[:2], rtol=1e-12)
    assert float(clopper_pearson_lower(k[2], n[2], 0.001)) == pytest.approx(float(expected[2]), rel=1e-11)
    for trials in (10, 1000, 100_000):
        all_agree = float(clopper_pearson_lower(torch.tensor(trials), trials, 0.001))
        assert all_agree == pytest.approx(0.001 ** (1 / trials), rel=1e-13)
        one = float(clopper_pearson_lower(torch.tensor(1), trials, 0.001))  # I_x(1, n) = 1 - (1 - x)^n
        assert one == pytest.approx(1 - 0.999 ** (1 / trials), rel=1e-9)
    assert float(clopper_pearson_lower(torch.tensor(0), 50, 0.001)) == 0.0
    with pytest.raises(ConfigError, match="alpha"):
        clopper_pearson_lower(torch.tensor(3), 10, 1.5)
    with pytest.raises(ConfigError, match="successes"):
        clopper_pearson_lower(torch.tensor(11), 10, 0.01)


def test_binomial_test_known_values() -> None:
    k = torch.tensor([60, 3, 10, 5, 0])
    m = torch.tensor([100, 20, 10, 10, 7])
    p = binomial_test_half(k, m)
    # scipy.stats.binomtest(k, m, 0.5).pvalue; all-or-nothing is 2 * 2^-m; a tie is 1
    expected = [0.05688793364098089, 0.0025768280029296875, 2 * 2**-10, 1.0, 2 * 2**-7]
    assert torch.allclose(p, torch.tensor(expected, dtype=torch.float64), rtol=1e-10)


def test_statistics_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    for n in (100, 10_000, 100_000):
        k = torch.randint(0, n + 1, (40,), generator=gen)
        ours = clopper_pearson_lower(k, n, 0.001)
        ref = [stats.beta.ppf(0.001, int(v), n - int(v) + 1) if v > 0 else 0.0 for v in k]
        assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float64), atol=1e-12)
        m = torch.randint(1, n + 1, (40,), generator=gen)
        j = (torch.rand(40, generator=gen) * (m + 1)).long().clamp(max=m)
        ref = [stats.binomtest(int(a), int(b), 0.5).pvalue for a, b in zip(j, m, strict=True)]
        assert torch.allclose(binomial_test_half(j, m), torch.tensor(ref, dtype=torch.float64), rtol=1e-8, atol=1e-14)


# --- models with known answers -----------------------------------------------------------------------


class Constant(nn.Module):
    """Always the same class, whatever the input."""

    def __init__(self, label: int, k: int = 10) -> None:
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), k).float())

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1)


class Hyperplane(nn.Module):
    """Binary linear classifier: class 1 where w.x + b > 0; `calls` records the batch sizes it saw."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten())
        self.b = b
        self.calls: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def hyperplane_and_points(distances: list[float]) -> tuple[Hyperplane, Tensor, Tensor]:
    """A hyperplane through the grey image (0.5 everywhere) and points at the given signed distances."""
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    model = Hyperplane(w, b=-float(w.sum()) * 0.5)
    unit = w / w.norm()  # |unit| <= 1 per pixel, so 0.5 + d * unit stays in [0, 1] for |d| <= 0.5
    d = torch.tensor(distances)
    x = 0.5 + d[:, None, None, None] * unit  # (N, 1, 4, 4)
    return model, x, (d > 0).long()


def test_constant_classifier_certifies_the_cap_and_scales_with_sigma() -> None:
    victim = Victim(Constant(3), input_shape=SHAPE)
    x = torch.rand(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3, 3, 1, 3])
    result = Smoothed(victim, sigma=0.25, batch_size=4096).certify(x, y, n0=100, n=100_000, alpha=0.001)
    assert result.prediction.tolist() == [3, 3, 3, 3] and result.correct.tolist() == [True, True, False, True]
    assert torch.allclose(result.p_lower, torch.full((4,), 0.001**1e-5, dtype=torch.float64), rtol=1e-13)
    assert torch.allclose(result.radius, torch.full((4,), 0.9528641408474786, dtype=torch.float64), rtol=1e-9)
    assert max_radius(0.25, 100_000, 0.001) == pytest.approx(0.953, abs=5e-4)  # the paper's 3.81 sigma
    assert result.certified_accuracy(0.95) == 0.75 and result.certified_accuracy(0.96) == 0.0
    assert result.abstain_rate == 0.0
    radii = [
        float(Smoothed(victim, sigma=s).certify(x[:1], y[:1], n0=10, n=1000).radius[0]) for s in (0.12, 0.25, 0.5, 1.0)
    ]
    assert radii == sorted(radii)
    assert radii == pytest.approx([max_radius(s, 1000, 0.001) for s in (0.12, 0.25, 0.5, 1.0)], rel=1e-12)
    assert max_radius(1.0, 1000, 0.001) == pytest.approx(2.4633, abs=1e-4)  # Phi^-1(0.001^(1/1000))


def test_linear_classifier_radius_approaches_the_distance_from_below() -> None:
    distances = [0.05, 0.1, 0.2, 0.3, -0.15, -0.25]
    model, x, y = hyperplane_and_points(distances)
    sigma, alpha = 0.25, 0.001
    gaps = []
    for n in (1000, 10_000, 100_000):
        result = Smoothed(Victim(model, input_shape=SHAPE), sigma=sigma, batch_size=8192, seed=n).certify(
            x, y, n0=100, n=n, alpha=alpha
        )
        certified = result.prediction != ABSTAIN
        assert bool((result.prediction[certified] == y[certified]).all())
        for d, p_lower, radius in zip(distances, result.p_lower.tolist(), result.radius.tolist(), strict=True):
            p_true = normal_cdf(abs(d) / sigma)  # closed form: the smoothed linear classifier's top probability
            slack = 7 * math.sqrt(p_true * (1 - p_true) / n) + 2 / n
            assert p_true - slack <= p_lower <= p_true + 1e-12, (n, d)
            assert radius <= abs(d) + 1e-9, (n, d)  # never beyond the true distance to the boundary
        gaps.append(sum(abs(d) for d in distances) - float(result.radius.sum()))
    assert gaps[0] > gaps[1] > gaps[2] >= 0
    assert gaps[2] / len(distances) < 0.02  # within 0.02 of the true distance on average at n = 100,000


def test_abstains_on_the_boundary_and_predicts_far_from_it() -> None:
    model, x, y = hyperplane_and_points([0.0, 0.3, -0.3])
    smoothed = Smoothed(Victim(model, input_shape=SHAPE), sigma=0.25)
    result = smoothed.certify(x, y, n0=100, n=10_000)
    assert result.prediction.tolist() == [ABSTAIN, 1, 0]
    assert result.radius[0] == 0.0 and result.p_lower[0] < 0.5
    assert result.abstain_rate == pytest.approx(1 / 3)
    assert smoothed.predict(x, n=10_000, alpha=0.001).tolist() == [ABSTAIN, 1, 0]


def test_same_seed_same_certificates() -> None:
    model, x, y = hyperplane_and_points([0.01, 0.02, -0.03, 0.1])
    victim = Victim(model, input_shape=SHAPE)

    def run(seed: int) -> Tensor:
        return Smoothed(victim, sigma=0.5, seed=seed, batch_size=300).certify(x, y, n0=50, n=2000).counts

    first = run(7)
    assert torch.equal(first, run(7))
    assert not torch.equal(first, run(8))
    predict = Smoothed(victim, sigma=0.5, seed=7).predict
    assert torch.equal(predict(x, n=500), predict(x, n=500))


def test_batches_mix_images_and_respect_the_batch_size() -> None:
    model, x, y = hyperplane_and_points([0.1, 0.2, -0.1])
    events: list[ProgressEvent] = []
    Smoothed(Victim(model, input_shape=SHAPE), sigma=0.25, batch_size=37).certify(
        x, y, n0=20, n=100, progress=events.append
    )
    forwards = model.calls[1:]  # the first call reads the number of classes
    assert max(forwards) <= 37 and sum(forwards) == 3 * (20 + 100)
    assert len(forwards) == math.ceil(3 * 20 / 37) + math.ceil(3 * 100 / 37)  # chunks span images
    assert [e.completed for e in events] == sorted(e.completed for e in events)
    assert events[-1].completed == events[-1].total == 360


def test_result_record_is_plain_json() -> None:
    model, x, y = hyperplane_and_points([0.0, 0.15, 0.2, -0.3])
    result = Smoothed(Victim(model, input_shape=SHAPE), sigma=0.25).certify(x, y, n0=20, n=500)
    d = json.loads(json.dumps(result.to_dict(radii=(0.0, 0.1, 0.5))))
    assert d["sigma"] == 0.25 and d["n"] == 500 and d["images"] == 4
    curve = [row["accuracy"] for row in d["certified_accuracy"]]
    assert [row["radius"] for row in d["certified_accuracy"]] == [0.0, 0.1, 0.5]
    assert curve == sorted(curve, reverse=True) and curve[-1] == 0.0
    assert d["abstain_rate"] == result.abstain_rate == 0.25
    assert d["per_sample"]["prediction"][0] == ABSTAIN and len(d["per_sample"]["radius"]) == 4
    assert d["average_certified_radius"] == pytest.approx(float(result.radius[1:].sum()) / 4)


def test_bad_settings_are_config_errors() -> None:
    model, x, y = hyperplane_and_points([0.1])
    victim = Victim(model, input_shape=SHAPE)
    for sigma in (0.0, -0.5, math.nan):
        with pytest.raises(ConfigError, match="sigma must be a positive number"):
            Smoothed(victim, sigma=sigma)
    smoothed = Smoothed(victim, sigma=0.25)
    with pytest.raises(ConfigError, match="n0"):
        smoothed.certify(x, y, n0=0, n=10)
    with pytest.raises(ConfigError, match="alpha"):
        smoothed.certify(x, y, n=10, alpha=1.0)
    with pytest.raises(ConfigError, match="batch_size"):
        Smoothed(victim, sigma=0.25, batch_size=0)
    with pytest.raises(DataError, match="labels"):
        smoothed.certify(x, torch.tensor([1, 0]), n0=5, n=10)
    with pytest.raises(DataError, match="bounds"):
        smoothed.certify(x + 2, y, n0=5, n=10)


# --- the gaussian training recipe --------------------------------------------------------------------


def test_gaussian_recipe_is_registered_and_adds_seeded_noise() -> None:
    assert RECIPES.get("gaussian") is GaussianNoise and GaussianNoise().sigma == 0.25
    with pytest.raises(ConfigError, match="gaussian: sigma must be > 0"):
        GaussianNoise(sigma=0.0)
    hook = GaussianNoise(sigma=0.5).hooks(TrainConfig(), (1, 8, 8)).transform
    assert hook is not None
    x = torch.full((64, 1, 8, 8), 0.5)
    noisy = hook(nn.Identity(), x, torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(0), 0.0)
    assert float((noisy - x).std()) == pytest.approx(0.5, rel=0.05)
    again = hook(nn.Identity(), x, torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(0), 0.0)
    assert torch.equal(noisy, again)


def test_noise_training_beats_clean_training_on_noisy_inputs(digits_data: Dataset) -> None:
    """The reason for the recipe: the base classifier must be accurate under the certification noise."""
    sigma, cfg = 0.5, TrainConfig(epochs=10, lr=3e-3, seed=0)
    x, y = digits_data.x_test, digits_data.y_test
    noisy = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    acc = {}
    for name, hooks in (("standard", None), ("gaussian", GaussianNoise(sigma=sigma).hooks(cfg, (1, 8, 8)))):
        torch.manual_seed(0)
        model = build_model("mlp", num_classes=10, in_channels=1, image_size=8)
        fit(model, digits_data.x_train, digits_data.y_train, cfg, hooks=hooks)
        acc[name] = accuracy(model, noisy, y)
    assert acc["gaussian"] > acc["standard"] + 0.05, acc  # measured: 0.78 vs 0.67
