"""UAP: one perturbation for every image, inside the ball, fitted on some images and fooling others."""

import pytest
import torch
from torch import nn

from bastion.attacks.evasion.uap import UAP
from bastion.core import ConfigError, ThreatModel, Victim, make_generator
from bastion.core.results import AttackResult
from bastion.data import Dataset

N = 100


def run_uap(model: nn.Module, data: Dataset, norm: str = "linf", eps: float = 0.3, seed: int = 0) -> AttackResult:
    victim = Victim(model, input_shape=(1, 8, 8))
    attack = UAP(threat=ThreatModel(norm=norm, eps=eps), max_passes=2, seed=seed)  # type: ignore[arg-type]
    return attack.run(victim, data.x_test[:N], data.y_test[:N])


@pytest.fixture(scope="module")
def linf_result(digits_model: nn.Module, digits_data: Dataset) -> AttackResult:
    return run_uap(digits_model, digits_data)


def per_pixel_spread(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per pixel, the spread of x_adv - x over the images where that pixel is not clipped (0 for one v)."""
    delta = x_adv - x
    free = (x_adv > 0) & (x_adv < 1)
    hi = torch.where(free, delta, torch.tensor(-torch.inf)).amax(0)
    lo = torch.where(free, delta, torch.tensor(torch.inf)).amin(0)
    return (hi - lo)[free.any(0)]


def random_sign_fooling_rate(victim: Victim, x: torch.Tensor, eps: float, draws: int = 5) -> float:
    """The mean fooling rate of `draws` random +-eps sign patterns (a UAP's L-inf norm), each one v for all x."""
    gen = make_generator(7)
    clean = victim.predict(x)
    rates = []
    for _ in range(draws):
        v = eps * torch.randn((1, *x.shape[1:]), generator=gen).sign()
        rates.append(float((victim.predict((x + v).clamp(0, 1)) != clean).float().mean()))
    return sum(rates) / draws


def test_inside_ball_bounds_and_the_same_v_for_every_image(linf_result: AttackResult, digits_data: Dataset) -> None:
    x = digits_data.x_test[:N]
    r = linf_result
    assert float((r.x_adv - x).abs().max()) <= 0.3 + 1.2e-7
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    # one v for every image, the misclassified ones included (the papers' threat)
    assert not bool(r.clean_correct.all())
    spread = per_pixel_spread(x, r.x_adv)
    assert spread.numel() > 32 and float(spread.max()) < 1e-6
    assert bool((r.x_adv[~r.clean_correct] != x[~r.clean_correct]).any())
    # a real perturbation was found, on the L-inf ball's surface
    assert r.extra["v_linf"] == pytest.approx(0.3, abs=1e-6)


def test_heldout_numbers_are_measured_on_every_heldout_image(
    linf_result: AttackResult, digits_victim: Victim, digits_data: Dataset
) -> None:
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    r, e = linf_result, linf_result.extra
    held = torch.tensor(e["heldout_index"])
    assert e["n_fit"] + e["n_heldout"] == N and held.numel() == e["n_heldout"]
    assert abs(e["n_fit"] - e["n_heldout"]) <= 1  # fit_fraction 0.5
    # re-measured on the model: x_adv is clip(x + v) for each held-out image
    pred_v, clean = digits_victim.predict(r.x_adv[held]), digits_victim.predict(x[held])
    assert e["fooling_rate_heldout"] == pytest.approx(float((pred_v != clean).double().mean()))
    assert e["accuracy_under_v_heldout"] == pytest.approx(float((pred_v == y[held]).double().mean()))
    assert e["clean_accuracy_heldout"] == pytest.approx(float((clean == y[held]).double().mean()))
    assert r.robust_accuracy == pytest.approx(float((digits_victim.predict(r.x_adv) == y).double().mean()))


def test_heldout_fooling_rate_beats_a_random_perturbation_of_the_same_norm(
    linf_result: AttackResult, digits_victim: Victim, digits_data: Dataset
) -> None:
    e = linf_result.extra
    baseline = random_sign_fooling_rate(digits_victim, digits_data.x_test[:N][e["heldout_index"]], 0.3)
    assert e["fooling_rate_heldout"] >= 0.25
    assert e["fooling_rate_heldout"] >= baseline + 0.1
    assert 0 < e["dominant_share"] <= 1


def test_l2_ball(digits_model: nn.Module, digits_data: Dataset) -> None:
    r = run_uap(digits_model, digits_data, norm="l2", eps=1.5)
    x = digits_data.x_test[:N]
    assert float((r.x_adv - x).flatten(1).norm(dim=1).max()) <= 1.5 + 1e-6
    assert r.extra["v_l2"] <= 1.5 + 1e-6
    assert float(per_pixel_spread(x, r.x_adv).max()) < 1e-6
    assert r.extra["fooling_rate_heldout"] > 0.1


def test_seed_reproduces_and_changes_the_split(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    attack = UAP(threat=ThreatModel(eps=0.3), max_passes=1, seed=4)
    a, b = attack.run(victim, x, y), attack.run(victim, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and a.extra == b.extra
    c = UAP(threat=ThreatModel(eps=0.3), max_passes=1, seed=5).run(victim, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_fit_returns_v_and_all_fit_leaves_no_heldout(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    attack = UAP(threat=ThreatModel(eps=0.2), max_passes=1, fit_fraction=1.0)
    v = attack.fit(digits_victim, x)
    assert v.shape == (1, 1, 8, 8) and float(v.abs().max()) <= 0.2 + 1e-7 and float(v.abs().max()) > 0
    r = attack.run(digits_victim, x, y)
    assert r.extra["n_heldout"] == 0 and r.extra["fooling_rate_heldout"] is None
    assert r.extra["accuracy_under_v_heldout"] is None and r.extra["n_fit"] == 40


def test_deepfool_finds_a_small_perturbation_that_flips_the_label(digits_victim: Victim, digits_data: Dataset) -> None:
    attack = UAP(threat=ThreatModel(eps=0.3))
    flipped = 0
    for i in range(10):
        x0 = digits_data.x_test[i : i + 1]
        label = int(digits_victim.predict(x0)[0])
        r, converged = attack._deepfool(digits_victim, x0, label)
        if converged:
            flipped += int(digits_victim.predict(x0 + r)[0]) != label
            assert float(r.norm()) < 3.0  # minimal: far below the distance between digit images
    assert flipped >= 8


def test_bad_settings_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="untargeted"):
        UAP(threat=ThreatModel(eps=0.3, targeted=True))
    with pytest.raises(ConfigError, match="delta"):
        UAP(threat=ThreatModel(eps=0.3), delta=1.0)
    with pytest.raises(ConfigError, match="fit_fraction"):
        UAP(threat=ThreatModel(eps=0.3), fit_fraction=0.0)
