"""FG-UAP and the penultimate-feature hook it stands on."""

import pytest
import torch
from torch import Tensor, nn

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
    spread = per_pixel_spread(x[result.clean_correct], result.x_adv[result.clean_correct])
    assert spread.numel() > 32 and float(spread.max()) < 1e-6
    assert 0 < result.extra["v_linf"] <= 0.2 + 1e-7
    assert 1 <= result.extra["best_epoch"] <= 20


def test_heldout_fooling_rate_beats_random_noise_and_matches_uap(
    result: AttackResult, digits_victim: Victim, digits_data: Dataset
) -> None:
    """Measured at L-inf 0.2 on 47 held-out digits: FG-UAP 40%, UAP 28%, a random sign pattern 5%."""
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    x_ok = x[result.clean_correct]
    gen = make_generator(7)
    noise = [0.2 * torch.randn((1, 1, 8, 8), generator=gen).sign() for _ in range(5)]
    clean = digits_victim.predict(x_ok)
    random_fr = sum(float((digits_victim.predict((x_ok + v).clamp(0, 1)) != clean).float().mean()) for v in noise) / 5
    fr = result.extra["fooling_rate_heldout"]
    assert fr >= random_fr + 0.15
    uap = UAP(threat=ThreatModel(eps=0.2), max_passes=2, seed=0).run(digits_victim, x, y)
    assert fr >= uap.extra["fooling_rate_heldout"] - 0.05


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
    x, y = digits_data.x_test[:8], digits_data.y_test[:8]
    with pytest.raises(ConfigError, match=r"target_class must lie in \[0, 10\)"):
        FGUAP(threat=ThreatModel(eps=0.2), epochs=1, target_class=10).run(digits_victim, x, y)
