"""Data protections: the One-Pixel Shortcut search against a brute-force score, one pixel per image and
no pair reused, perturbations inside their ball and the bounds, seeds that reproduce, the surrogate
search that lowers the loss, and (on scikit-learn's digits) protections that keep a model from learning
what random noise of the same size does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.poisoning.protect import (
    ErrorMinimizing,
    OnePixelShortcut,
    RandomNoise,
    SelfEnsembleProtection,
    perturbation_size,
)
from bastion.attacks.poisoning.protect.ops import corner_colours, pixel_scores
from bastion.attacks.poisoning.protect.sep import spaced_checkpoints
from bastion.core import ConfigError, DataError
from bastion.core.random import seed_everything
from bastion.core.registry import ATTACKS
from bastion.data import Dataset
from bastion.models import build_model
from bastion.train import TrainConfig, fit
from bastion.train.loop import accuracy


def _brute_scores(x: Tensor, colours: Tensor) -> Tensor:
    h, w = x.shape[2:]
    out = torch.empty(h * w, colours.shape[0], dtype=torch.float64)
    for p in range(h * w):
        r, q = divmod(p, w)
        for v in range(colours.shape[0]):
            d = (colours[v].double()[None, :] - x[:, :, r, q].double()).abs()  # (n, C)
            out[p, v] = d.mean() / d.std(correction=0)
    return out


def test_pixel_scores_match_the_definition_and_the_extremes() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(7, 3, 4, 5, generator=gen)
    colours = corner_colours(3)
    assert colours.shape == (8, 3) and colours[5].tolist() == [1.0, 0.0, 1.0]
    assert torch.allclose(pixel_scores(x, colours), _brute_scores(x, colours), rtol=1e-9, atol=1e-9)
    # a constant pixel: +inf towards the far extreme, -inf at its own colour (never chosen)
    flat = torch.zeros(3, 1, 2, 2)
    s = pixel_scores(flat, corner_colours(1))
    assert torch.isposinf(s[:, 1]).all() and torch.isneginf(s[:, 0]).all()


def _tiny() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(60, 1, 6, 6, generator=gen) * 0.8 + 0.1, torch.arange(60) % 3


def test_one_pixel_shortcut_sets_one_pixel_per_image_and_never_reuses_a_pair() -> None:
    x, y = _tiny()
    p = OnePixelShortcut().protect(x, y, 3)
    assert perturbation_size(x, p.x)["l0_pixels"] == 1
    changed = (p.x != x).flatten(1).sum(dim=1)
    assert changed.tolist() == [1] * 60  # no image already held its class's extreme colour
    pixels = {k: v[0] for k, v in p.extra["pixels"].items()}
    pairs = {(d["row"], d["col"], tuple(d["colour"])) for d in pixels.values()}
    assert len(pairs) == 3
    for k, d in pixels.items():
        members = y == int(k)
        assert (p.x[members, 0, d["row"], d["col"]] == d["colour"][0]).all()
        # the chosen pair is the best of the brute-force score, excluding the pairs earlier classes took
        s = _brute_scores(x[members], corner_colours(1))
        for j in range(int(k)):
            e = pixels[str(j)]
            s[e["row"] * 6 + e["col"], int(e["colour"][0])] = -torch.inf
        assert int(s.flatten().argmax()) == (d["row"] * 6 + d["col"]) * 2 + int(d["colour"][0])
    assert torch.equal(p.x, OnePixelShortcut(seed=5).protect(x, y, 3).x)  # model-free and seed-free at fraction 1


def test_sparsity_and_fraction() -> None:
    x, y = _tiny()
    p = OnePixelShortcut(sparsity=3).protect(x, y, 3)
    assert perturbation_size(x, p.x)["l0_pixels"] == 3 and all(len(v) == 3 for v in p.extra["pixels"].values())
    half = OnePixelShortcut(fraction=0.5, seed=2).protect(x, y, 3)
    untouched = torch.ones(60, dtype=torch.bool)
    untouched[half.index] = False
    assert half.index.numel() == 30 and torch.equal(half.x[untouched], x[untouched])
    assert not torch.equal(half.index, OnePixelShortcut(fraction=0.5, seed=3).protect(x, y, 3).index)


def test_random_noise_stays_in_the_ball_and_reproduces() -> None:
    x, y = _tiny()
    a = RandomNoise(eps=0.05, seed=1).protect(x, y, 3)
    size = perturbation_size(x, a.x)
    assert 0.04 < size["linf"] <= 0.05 + 1e-7 and a.x.min() >= 0 and a.x.max() <= 1
    assert torch.equal(a.x, RandomNoise(eps=0.05, seed=1).protect(x, y, 3).x)
    assert not torch.equal(a.x, RandomNoise(eps=0.05, seed=2).protect(x, y, 3).x)
    assert RandomNoise().protect(x, y, 3).extra["eps"] == 0.3  # grayscale default
    assert RandomNoise().protect(x.expand(60, 3, 6, 6), y, 3).extra["eps"] == pytest.approx(8 / 255)


def test_bad_input_and_parameters() -> None:
    x, y = _tiny()
    for cls, bad in ((OnePixelShortcut, {"sparsity": 0}), (ErrorMinimizing, {"eps": 0.0}), (RandomNoise, {"eps": 2.0})):
        with pytest.raises(ConfigError):
            cls(**bad)
    with pytest.raises(DataError, match="labels"):
        OnePixelShortcut().protect(x, y + 2, 3)
    with pytest.raises(ConfigError, match="build"):
        ErrorMinimizing().protect(x, y, 3)
    with pytest.raises(DataError, match="sparsity"):
        OnePixelShortcut(sparsity=37).protect(x, y, 3)
    assert spaced_checkpoints(12, 10) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11] and spaced_checkpoints(4, 2) == [1, 3]
    with pytest.raises(ConfigError):
        spaced_checkpoints(3, 4)
    assert {ATTACKS.family(n) for n in ("one-pixel-shortcut", "error-minimizing", "random-noise")} == {"protection"}
    assert ATTACKS.family("self-ensemble-protection") == "protection"


def _build(seed: int) -> nn.Module:
    seed_everything(seed)
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)


def _learned(data: Dataset, x_train: Tensor) -> float:
    """Test accuracy of a small_cnn trained on (x_train, the digits' labels), 8 epochs."""
    model = _build(0)
    fit(model, x_train, data.y_train, TrainConfig(epochs=8, lr=3e-3, seed=0))
    return accuracy(model.eval(), data.x_test, data.y_test)


def test_error_minimizing_noise_is_in_the_ball_and_lowers_the_surrogates_loss(digits_data: Dataset) -> None:
    x, y = digits_data.x_train[:400], digits_data.y_train[:400]
    em = ErrorMinimizing(eps=0.2, steps=5, max_rounds=4, stop_error=0.0, seed=0)
    p = em.protect(x, y, 10, build=_build)
    size = perturbation_size(x, p.x)
    assert size["linf"] <= 0.2 + 1e-6 and p.x.min() >= 0 and p.x.max() <= 1
    assert p.extra["rounds"] == 4 and len(p.extra["error_curve"]) == 4 and not p.extra["converged"]
    assert p.extra["error_curve"][-1] < p.extra["error_curve"][0]
    assert torch.equal(p.x, em.protect(x, y, 10, build=_build).x)  # seeded end to end


def test_error_minimizing_noise_costs_far_more_than_random_noise_of_its_radius(digits_data: Dataset) -> None:
    # the unlearnable-examples claim at small scale (scikit-learn's 8x8 digits, small_cnn, 8 epochs, no
    # augmentation), beside uniform noise of the same radius. Measured at seed 0: clean 98.1%, uniform
    # noise (0.3) 96.1%, error-minimizing (0.3) 68.5% (converged in 5 rounds). On these digits the
    # One-Pixel Shortcut does not hold (95.3%: the digits are learned as fast as the pixel); see
    # docs/protection.md.
    d = digits_data
    x, y = d.x_train, d.y_train
    clean = _learned(d, x)
    noise = _learned(d, RandomNoise(eps=0.3).protect(x, y, 10).x)
    protected = ErrorMinimizing(eps=0.3, max_rounds=30).protect(x, y, 10, build=_build)
    em = _learned(d, protected.x)
    assert protected.extra["converged"], protected.extra
    assert clean >= 0.9 and noise >= clean - 0.08, (clean, noise)
    assert em <= noise - 0.15, (clean, noise, em)


def test_self_ensemble_protection_moves_towards_the_target_class(digits_data: Dataset) -> None:
    x, y = digits_data.x_train[:300], digits_data.y_train[:300]
    sep = SelfEnsembleProtection(eps=0.1, steps=5, checkpoints=3, epochs=3)
    p = sep.protect(x, y, 10, build=_build)
    assert perturbation_size(x, p.x)["linf"] <= 0.1 + 1e-6 and p.x.min() >= 0 and p.x.max() <= 1
    # a model trained on the clean images finds the protected ones closer to the target class (y + 5) mod 10
    model = _build(1)
    fit(model, x, y, TrainConfig(epochs=3, lr=3e-3, seed=1))
    model.eval()
    target = (y + 5) % 10
    with torch.no_grad():
        before, after = F.cross_entropy(model(x), target), F.cross_entropy(model(p.x), target)
    assert float(after) < float(before)
    with pytest.raises(ConfigError, match="checkpoints"):
        SelfEnsembleProtection(checkpoints=5, epochs=3).protect(x, y, 10, build=_build)
