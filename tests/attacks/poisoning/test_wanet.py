"""WaNet: the warp is the reference's formula (identity at s = 0, smooth, bounded, seeded), noise samples
keep their labels, training control poisons each batch as the reference does (floor(rate B) backdoor,
floor(that x cross_ratio) noise, the rest clean, fresh noise every batch), the reference-style ASR is
counted over every test image, and on mnist5k the train-control backdoor takes hold in the audited
model's own recipe while the warp alone moves almost nothing on the clean model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.poisoning import WaNet
from bastion.attacks.poisoning.wanet import identity_grid, warp
from bastion.audit.kinds import KINDS, Scenario
from bastion.audit.kinds.backdoor import BackdoorSettings
from bastion.cli._target import ModelSource
from bastion.core import ConfigError, DataError, Victim, make_generator

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def _images(n: int, h: int = 12, w: int = 12, seed: int = 0) -> Tensor:
    return torch.rand(n, 1, h, w, generator=make_generator(seed))


def test_s_zero_is_the_identity_and_the_grid_is_in_x_y_order() -> None:
    x = _images(4, 12, 9)
    assert torch.equal(WaNet(s=0).warp_field(12, 9), identity_grid(12, 9))
    assert torch.allclose(WaNet(s=0).apply_trigger(x), x, atol=1e-5)
    g = identity_grid(12, 9)
    assert g[0, -1].tolist() == [1.0, -1.0] and g[-1, 0].tolist() == [-1.0, 1.0]  # (x, y): top right, bottom left
    step = g.clone()
    step[..., 0] += 2 / 8  # one pixel to the right in x
    assert torch.allclose(warp(x, step.clamp(-1, 1))[..., :-1], x[..., 1:], atol=1e-5)


def test_the_warp_field_is_the_reference_formula() -> None:
    # VinAIResearch/Warping-based_Backdoor_Attack-release train.py, with the same control grid
    attack, h = WaNet(seed=3, s=0.5), 28
    ins = attack.warp_control()[None]  # (1, 2, k, k)
    noise_grid = F.interpolate(ins, size=h, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    array1d = torch.linspace(-1, 1, steps=h)
    xx, yy = torch.meshgrid(array1d, array1d, indexing="ij")
    identity = torch.stack((yy, xx), 2)[None]
    grid_temps = torch.clamp((identity + 0.5 * noise_grid / h) * 1, -1, 1)
    assert torch.equal(attack.warp_field(h, h), grid_temps[0])
    x = _images(3, h, h)
    expected = F.grid_sample(x, grid_temps.repeat(3, 1, 1, 1), align_corners=True)
    assert torch.allclose(attack.apply_trigger(x), expected, atol=1e-6)


def test_the_warp_is_seeded_smooth_and_bounded() -> None:
    h = 28
    u = WaNet().warp_control()
    assert u.shape == (2, 4, 4) and float(u.abs().mean()) == pytest.approx(1.0)
    assert torch.equal(WaNet().warp_field(h, h), WaNet().warp_field(h, h))  # the seed reproduces it
    assert not torch.equal(WaNet(seed=1).warp_field(h, h), WaNet().warp_field(h, h))
    g = identity_grid(h, h)
    for seed in range(5):
        attack = WaNet(seed=seed, s=0.5)
        u, m = attack.warp_control(), attack.warp_field(h, h)
        # bicubic weights sum to at most 1.375 in absolute value per axis: |P| <= 1.375^2 max|U|
        assert float((m - g).abs().max()) <= 0.5 * 1.375**2 * float(u.abs().max()) / h + 1e-6
        p = ((m - g) * h / 0.5)[1:-1, 1:-1]  # the displacement field P inside the border (the clamp cuts it there)
        jump = max(float((p[1:] - p[:-1]).abs().max()), float((p[:, 1:] - p[:, :-1]).abs().max()))
        noise = ((attack.noise_fields(m, 1, make_generator(seed))[0] - m) * h)[1:-1, 1:-1]
        assert jump <= 0.5 * float(u.abs().max()) < float((noise[1:] - noise[:-1]).abs().max())
    assert bool((WaNet(s=50).warp_field(h, h).abs() <= 1).all())  # clamped into the image


def test_dataset_mode_poisons_backdoor_and_noise_images() -> None:
    x, y = _images(200), torch.arange(200) % 10
    attack = WaNet(rate=0.1, target=3, cross_ratio=2, poisoning="dataset")
    p = attack.poison(x, y, 10)
    assert p.batch is None and p.index.numel() == 20 and p.cover.numel() == 40
    assert bool((y[p.index] != 3).all()) and bool((p.y[p.index] == 3).all())
    assert not bool(torch.isin(p.cover, p.index).any()) and torch.equal(p.cover, p.cover.sort().values)
    assert torch.equal(p.y[p.cover], y[p.cover])  # noise samples keep their labels
    assert torch.allclose(p.x[p.index], attack.apply_trigger(x[p.index]))
    noisy = p.x[p.cover]
    assert not bool(torch.isclose(noisy, x[p.cover]).all(dim=(1, 2, 3)).any())  # each one warped ...
    assert not bool(torch.isclose(noisy, attack.apply_trigger(x[p.cover])).all(dim=(1, 2, 3)).any())  # ... its own way
    rest = torch.ones(200, dtype=torch.bool)
    rest[p.index], rest[p.cover] = False, False
    assert torch.equal(p.x[rest], x[rest]) and torch.equal(p.y[rest], y[rest])
    again = WaNet(rate=0.1, target=3, poisoning="dataset").poison(x, y, 10)
    assert torch.equal(again.x, p.x) and torch.equal(again.cover, p.cover)


def test_train_control_poisons_every_batch_like_the_reference() -> None:
    x, y = _images(64), torch.arange(64) % 10
    attack = WaNet(rate=0.1, cross_ratio=2, include_target_class=True)  # the reference's draw: any class
    p = attack.poison(x, y, 10)
    assert p.x is x and p.y is y and p.index.numel() == 0 and p.batch is not None  # the set itself is untouched
    gen = make_generator(0)
    xb, yb = p.batch(x, y, gen)
    # floor(0.1 * 64) = 6 backdoor images first, then 12 noise images, then 46 clean ones
    assert torch.allclose(xb[:6], attack.apply_trigger(x[:6])) and yb[:6].tolist() == [0] * 6
    changed = ~torch.isclose(xb, x).all(dim=(1, 2, 3))
    warped = torch.isclose(xb, attack.apply_trigger(x)).all(dim=(1, 2, 3))
    assert bool(changed[6:18].all()) and not bool(warped[6:18].any()) and torch.equal(yb[6:], y[6:])
    assert torch.equal(xb[18:], x[18:]) and bool((x == p.x).all())  # the input batch is not edited in place
    xb2, _ = p.batch(x, y, gen)
    assert torch.equal(xb2[:6], xb[:6]) and not torch.allclose(xb2[6:18], xb[6:18])  # fresh noise each batch
    odd = WaNet(rate=0.1, cross_ratio=1.5, include_target_class=True).poison(x[:58], y[:58], 10).batch
    assert odd is not None
    xo, yo = odd(x[:58], y[:58], gen)  # floor(5.8) = 5 backdoor images, floor(5 * 1.5) = 7 noise images
    assert int((yo != y[:58]).sum()) <= 5 and int((~torch.isclose(xo, x[:58]).all(dim=(1, 2, 3))).sum()) == 12
    # bastion's default draw: the backdoor images are the first ones of the other classes
    default = WaNet(rate=0.1).poison(x, y, 10).batch
    assert default is not None
    xd, yd = default(x, y, gen)
    first = (y != 0).nonzero().flatten()[:6]
    assert torch.allclose(xd[first], attack.apply_trigger(x[first])) and bool((yd[first] == 0).all())
    assert int((yd != y).sum()) == 6 and int((~torch.isclose(xd, x).all(dim=(1, 2, 3))).sum()) == 18


class _Bright(nn.Module):
    """Class 0 for a bright image (mean above 0.5), class 1 otherwise."""

    def forward(self, x: Tensor) -> Tensor:
        bright = x.mean(dim=(1, 2, 3)) > 0.5
        return F.one_hot(torch.where(bright, 0, 1), 10).float()


def test_reference_style_asr_counts_every_test_image() -> None:
    # constant images stay constant under any warp; classes 0, 1, 2 are bright, the rest dark
    y = torch.arange(100) % 10
    x = torch.where(y < 3, 0.9, 0.1)[:, None, None, None].expand(100, 1, 12, 12).clone()
    attack = WaNet()
    p = attack.poison(x, y, 10)
    result = attack.evaluate(Victim(_Bright(), input_shape=(1, 12, 12)), x, y, p, seconds=0.0)
    assert result.asr == pytest.approx(20 / 90)  # classes 1 and 2 of the 90 images outside class 0
    extra = result.to_dict()["extra"]
    assert extra["asr_reference_style"] == pytest.approx(0.3)  # class 0 counts too: (20 + 10) / 100
    assert extra["noise_accuracy"] == pytest.approx(0.1) and result.clean_accuracy == pytest.approx(0.1)
    assert extra["poisoning"] == "train-control" and extra["n_noise"] == 0
    assert torch.equal(torch.tensor(extra["warp_control"]), attack.warp_control())  # M can be rebuilt


def test_wanet_refuses_bad_settings_and_inputs() -> None:
    x, y = _images(20), torch.arange(20) % 10
    with pytest.raises(ConfigError, match="exceed the whole set"):
        WaNet(rate=0.4, cross_ratio=2)
    with pytest.raises(ConfigError, match="poisoning"):
        WaNet(poisoning="online")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="target"):
        WaNet(target=10).poison(x, y, 10)
    with pytest.raises(DataError, match="one label per image"):
        WaNet().poison(x, y[:10], 10)
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        WaNet().apply_trigger(x[0])
    with pytest.raises(DataError, match="can be poisoned"):
        WaNet(poisoning="dataset").poison(x, torch.zeros(20, dtype=torch.long), 10)  # all of the target class
    with pytest.raises(DataError, match="noise images asked for"):
        WaNet(rate=0.3, poisoning="dataset").poison(x[:5], y[:5], 10)  # round(1.5) = 2 backdoor, 4 noise, 3 left


def test_wanet_train_control_on_mnist5k_takes_hold(tmp_path: Path) -> None:
    # The reference's threat model on the audited small_cnn's own recipe (12 epochs, batch 64: 6 backdoor and
    # 12 noise images in every batch). WaNet on MNIST: 99.86% reference-style ASR after up to 1,000 epochs;
    # here measured 97.3% at seed 0, clean accuracy 98.6% against 98.4%, the warp on the clean model 0.2%.
    # Seeds 1-5 gave 96.9, 14.0, 99.2, 92.9, 99.3%: 12 epochs do not always suffice (docs/backdoors.md).
    target = replace(ModelSource(checkpoint=FIXTURES / "small_cnn-mnist5k.safetensors").target(), model_dir=tmp_path)
    kind = KINDS.get("backdoor")
    sc = Scenario("wanet", "backdoor", "wanet", 1000, BackdoorSettings(params={}, detectors=("strip", "ntd")))
    result = kind.run(sc, target, seed=0, progress=None)
    m, record = result.metrics, result.record
    assert m["asr"] >= 0.9 and m["clean_drop"] <= 0.02, m
    assert m["clean_model_asr"] <= 0.15, m
    assert record["n_poisoned"] == 0 and record["extra"]["poisoning"] == "train-control"
    assert record["extra"]["asr_reference_style"] >= m["asr"] - 0.01 and record["extra"]["noise_accuracy"] >= 0.9
    # WaNet's claim against STRIP (its paper, Fig. 6): the warp does not keep blends confident, so STRIP ranks
    # warped inputs no better than chance (measured AUROC 0.30 at n = 50), while NTD, which compares features
    # in a clean model, still finds them (0.998)
    assert m["strip_auroc"] <= 0.6 and m["strip_tpr"] <= 0.2, m
    assert m["ntd_auroc"] >= 0.9 and m["ntd_tpr"] >= 0.5, m
    assert [a.name for a in result.artifacts] == ["poisoned.png"]  # the trigger shown on training images


def test_a_training_set_inspector_needs_a_poisoned_set() -> None:
    # training control leaves the stored set clean: an inspector would have nothing to find, and the audit
    # says so before it trains anything
    target = ModelSource(checkpoint=FIXTURES / "small_cnn-mnist5k.safetensors").target()
    kind = KINDS.get("backdoor")
    assert not WaNet().poisons_the_set and WaNet(poisoning="dataset").poisons_the_set
    inspect = BackdoorSettings(params={}, detectors=("strip", "activation-clustering"))
    with pytest.raises(ConfigError, match="activation-clustering inspect a poisoned training set"):
        kind.check(Scenario("wanet", "backdoor", "wanet", 100, inspect), target)
    kind.check(Scenario("wanet", "backdoor", "wanet", 100, BackdoorSettings(params={}, detectors=("strip",))), target)
    dataset = BackdoorSettings(params={"poisoning": "dataset"}, detectors=("activation-clustering",))
    kind.check(Scenario("wanet", "backdoor", "wanet", 100, dataset), target)
