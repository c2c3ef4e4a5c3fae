"""FG-UAP and the penultimate-feature hook it stands on."""

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion import fg_uap
from bastion.attacks.evasion.fg_uap import FGUAP
from bastion.attacks.evasion.uap import UAP
from bastion.core import ConfigError, ThreatModel, Victim, make_generator
from bastion.core.features import find_head, penultimate_features
from bastion.core.results import AttackResult
from bastion.data import Dataset
from bastion.models import build_model

N = 100


# --- the feature hook -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "channels", "size", "name", "dim"),
    [("small_cnn", 1, 8, "fc2", 128), ("lenet", 1, 16, "fc3", 84), ("resnet20", 3, 8, "fc", 64)],
)
def test_head_is_the_final_linear_layer(arch: str, channels: int, size: int, name: str, dim: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=channels, image_size=size).eval()
    x = torch.rand(5, channels, size, size)
    head = find_head(model, x)
    assert head.name == name and head.dim == dim and head.layer is dict(model.named_modules())[name]
    victim = Victim(model, input_shape=(channels, size, size))
    feats, logits = penultimate_features(victim, x)
    assert feats.shape == (5, dim) and torch.allclose(logits, victim.logits(x), atol=1e-5)
    # the features are what the head maps to the logits
    assert torch.allclose(head.layer(feats), logits, atol=1e-5)


def test_features_match_the_layers_before_the_head_and_carry_gradients(digits_model: nn.Module) -> None:
    victim = Victim(digits_model, input_shape=(1, 8, 8), batch_size=7)  # 20 inputs: three batches
    x = torch.rand(20, 1, 8, 8, generator=make_generator(0)).requires_grad_(True)
    feats, _ = penultimate_features(victim, x)
    assert isinstance(digits_model, nn.Sequential)
    assert torch.allclose(feats, digits_model[:-1](x), atol=1e-6)  # small_cnn: everything before fc2
    (grad,) = torch.autograd.grad(feats.sum(), x)
    assert grad.abs().sum() > 0


class ConvHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 10, kernel_size=8)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x).flatten(1)  # (N, 10): logits from a convolution


class SummedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 20)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1)).view(-1, 2, 10).sum(1)  # the last Linear gives 20 values, not the logits


@pytest.mark.parametrize(
    ("model", "match"), [(ConvHead(), "no nn.Linear runs"), (SummedHead(), "gives 20 outputs but .* 10 logits")]
)
def test_models_without_a_linear_head_get_a_clear_error(model: nn.Module, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        find_head(model, torch.rand(2, 1, 8, 8))
    assert "\n" not in str(info.value)
    victim = Victim(model, input_shape=(1, 8, 8))
    x = torch.rand(6, 1, 8, 8, generator=make_generator(0))
    with pytest.raises(ConfigError, match="penultimate"):
        FGUAP(threat=ThreatModel(eps=0.2), epochs=1).run(victim, x, victim.predict(x))  # every image attacked


# --- FG-UAP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def result(digits_model: nn.Module, digits_data: Dataset) -> AttackResult:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    return FGUAP(threat=ThreatModel(eps=0.2), seed=0).run(victim, digits_data.x_test[:N], digits_data.y_test[:N])


def per_pixel_spread(x: Tensor, x_adv: Tensor) -> Tensor:
    """Per pixel, the spread of x_adv - x over the images where that pixel is not clipped (0 for one v)."""
    delta = x_adv - x
    free = (x_adv > 0) & (x_adv < 1)
    hi = torch.where(free, delta, torch.tensor(-torch.inf)).amax(0)
    lo = torch.where(free, delta, torch.tensor(torch.inf)).amin(0)
    return (hi - lo)[free.any(0)]


def test_inside_ball_bounds_and_the_same_v_for_every_image(result: AttackResult, digits_data: Dataset) -> None:
    x = digits_data.x_test[:N]
    assert float((result.x_adv - x).abs().max()) <= 0.2 + 1.2e-7
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    spread = per_pixel_spread(x, result.x_adv)  # every image, misclassified ones included
    assert spread.numel() > 32 and float(spread.max()) < 1e-6
    assert 0 < result.extra["v_linf"] <= 0.2 + 1e-7
    assert 1 <= result.extra["best_epoch"] <= 20
    assert result.extra["n_val"] == 10  # a fifth of the 50 fit images


def test_heldout_fooling_rate_beats_random_noise_and_matches_uap(
    result: AttackResult, digits_victim: Victim, digits_data: Dataset
) -> None:
    """Measured at L-inf 0.2 on the 50 held-out digits: FG-UAP 38%, UAP 22%, a random sign pattern 7%."""
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    held = result.extra["heldout_index"]
    gen = make_generator(7)
    noise = [0.2 * torch.randn((1, 1, 8, 8), generator=gen).sign() for _ in range(5)]
    clean = digits_victim.predict(x[held])
    random_fr = (
        sum(float((digits_victim.predict((x[held] + v).clamp(0, 1)) != clean).float().mean()) for v in noise) / 5
    )
    fr = result.extra["fooling_rate_heldout"]
    # re-measured on the model
    pred_v = digits_victim.predict(result.x_adv[held])
    assert fr == pytest.approx(float((pred_v != clean).double().mean()))
    assert result.extra["accuracy_under_v_heldout"] == pytest.approx(float((pred_v == y[held]).double().mean()))
    assert fr >= random_fr + 0.15
    uap = UAP(threat=ThreatModel(eps=0.2), max_passes=2, seed=0).run(digits_victim, x, y)
    assert uap.extra["heldout_index"] == held  # the same seed splits the same way
    assert fr >= uap.extra["fooling_rate_heldout"] - 0.05


def test_the_best_epoch_is_picked_on_images_no_step_has_seen(
    digits_victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every image Adam steps on goes through `apply`, every image the epoch is picked on through
    `fooling_rate`: the two sets must be disjoint, and the v kept must be the epoch with the best rate
    on the second."""
    x = torch.rand(40, 1, 8, 8, generator=make_generator(1))  # distinct images: each row names itself
    stepped: list[Tensor] = []
    picked: list[tuple[Tensor, float]] = []
    real_apply, real_fooling_rate = fg_uap.apply, fg_uap.fooling_rate

    def spy_apply(xb: Tensor, v: Tensor, bounds: tuple[float, float]) -> Tensor:
        stepped.append(xb.detach().clone())
        return real_apply(xb, v, bounds)

    def spy_fooling_rate(victim: Victim, xb: Tensor, v: Tensor, clean: Tensor) -> float:
        fr = real_fooling_rate(victim, xb, v, clean)
        picked.append((xb.clone(), fr))
        return fr

    monkeypatch.setattr(fg_uap, "apply", spy_apply)
    monkeypatch.setattr(fg_uap, "fooling_rate", spy_fooling_rate)
    attack = FGUAP(threat=ThreatModel(eps=0.3), epochs=4, batch_size=8, seed=2)
    v = attack.fit(digits_victim, x)

    def rows(batches: list[Tensor]) -> set[int]:
        found = [int(i) for b in batches for row in b for i in ((x == row).flatten(1).all(1)).nonzero()]
        assert len(found) == sum(b.shape[0] for b in batches)  # every row is one of x
        return set(found)

    step_rows, val_rows = rows(stepped), rows([b for b, _ in picked])
    assert len(picked) == 4 and all(torch.equal(b, picked[0][0]) for b, _ in picked)  # the same images each epoch
    assert len(val_rows) == 8 and step_rows.isdisjoint(val_rows) and step_rows | val_rows == set(range(40))
    rates = [fr for _, fr in picked]
    clean = digits_victim.predict(x[sorted(val_rows)])
    kept = real_fooling_rate(digits_victim, x[sorted(val_rows)], v, clean)
    assert kept == max(rates)


def test_without_validation_images_the_last_epoch_is_kept(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    r = FGUAP(threat=ThreatModel(eps=0.2), epochs=3, val_fraction=0.0).run(digits_victim, x, y)
    assert r.extra["n_val"] == 0 and r.extra["best_epoch"] == 3 and r.extra["fooling_rate_val"] is None
    kept = FGUAP(threat=ThreatModel(eps=0.2), epochs=3, val_fraction=0.2).run(digits_victim, x, y)
    assert kept.extra["n_val"] == 4 and kept.extra["fooling_rate_val"] is not None


def test_heldout_images_do_not_influence_v(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    attack = FGUAP(threat=ThreatModel(eps=0.2), epochs=3, seed=1)
    a = attack.run(digits_victim, x, y)
    held = a.extra["heldout_index"]
    other = x.clone()
    other[held] = digits_data.x_test[40 : 40 + len(held)]  # the split depends on N and the seed only
    b = attack.run(digits_victim, other, y)
    assert b.extra["heldout_index"] == held
    fit = [i for i in range(40) if i not in held]
    assert torch.equal(a.x_adv[fit], b.x_adv[fit]) and a.extra["best_epoch"] == b.extra["best_epoch"]


def test_seed_reproduces(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    attack = FGUAP(threat=ThreatModel(norm="l2", eps=1.0), epochs=2, seed=3)
    a, b = attack.run(digits_victim, x, y), attack.run(digits_victim, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and a.extra == b.extra
    assert a.extra["v_l2"] <= 1.0 + 1e-6
    c = FGUAP(threat=ThreatModel(norm="l2", eps=1.0), epochs=2, seed=4).run(digits_victim, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_targeted_variant_gathers_predictions_in_the_target_class(digits_victim: Victim, digits_data: Dataset) -> None:
    x = digits_data.x_test[:N]
    plain = FGUAP(threat=ThreatModel(eps=0.3), epochs=5).fit(digits_victim, x)
    aimed = FGUAP(threat=ThreatModel(eps=0.3), epochs=5, target_class=3, target_weight=1.0).fit(digits_victim, x)

    def share_of_3(v: Tensor) -> float:
        return float((digits_victim.predict((x + v).clamp(0, 1)) == 3).float().mean())

    assert share_of_3(aimed) > share_of_3(plain) + 0.1


def test_bad_settings_raise_config_errors(digits_victim: Victim, digits_data: Dataset) -> None:
    with pytest.raises(ConfigError, match="untargeted"):
        FGUAP(threat=ThreatModel(eps=0.2, targeted=True))
    with pytest.raises(ConfigError, match="lr"):
        FGUAP(threat=ThreatModel(eps=0.2), lr=0.0)
    with pytest.raises(ConfigError, match="val_fraction"):
        FGUAP(threat=ThreatModel(eps=0.2), val_fraction=1.0)
    x, y = digits_data.x_test[:8], digits_data.y_test[:8]
    with pytest.raises(ConfigError, match=r"target_class must lie in \[0, 10\)"):
        FGUAP(threat=ThreatModel(eps=0.2), epochs=1, target_class=10).run(digits_victim, x, y)
