"""FGSM and PGD, and the contract `Attack.run` enforces for every attack."""

import dataclasses

import pytest
import torch
from torch import nn

from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.pgd import PGD
from bastion.core import ConfigError, DataError, ThreatModel, Victim, make_generator
from bastion.data import Dataset


def batch(data: Dataset, n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    return data.x_test[:n], data.y_test[:n]


def noise_accuracy(victim: Victim, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> float:
    gen = make_generator(123)
    if norm == "linf":
        x_noise = x + eps * (2 * torch.rand(x.shape, generator=gen) - 1)
    else:
        d = torch.randn(x.shape, generator=gen)
        x_noise = x + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return float((victim.predict(x_noise.clamp(0, 1)) == y).double().mean())


@pytest.mark.parametrize(
    ("attack", "eps"),
    [
        (FGSM, 0.1),
        (PGD, 0.1),
    ],
)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_inside_ball_bounds_and_success_remeasured(
    digits_victim: Victim, digits_data: Dataset, attack: type, eps: float, norm: str
) -> None:
    x, y = batch(digits_data)
    eps = eps if norm == "linf" else 8 * eps
    result = attack(threat=ThreatModel(norm=norm, eps=eps)).run(digits_victim, x, y)
    delta = (result.x_adv - x).flatten(1)
    limit = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((limit <= eps + 1.2e-7).all())
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.equal(result.y_adv, digits_victim.predict(result.x_adv))
    assert torch.equal(result.success, result.y_adv != y)
    # attacks beat random noise of the same norm by a wide margin
    assert result.robust_accuracy < noise_accuracy(digits_victim, x, y, norm, eps) - 0.2
    # samples wrong when clean are left untouched
    assert torch.equal(result.x_adv[~result.clean_correct], x[~result.clean_correct])


def test_linf_never_exceeds_eps_by_more_than_float_slack(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = batch(digits_data)
    eps = 8 / 255
    result = PGD(threat=ThreatModel(eps=eps), steps=5).run(digits_victim, x, y)
    assert float((result.x_adv - x).abs().max()) < 8.0001 / 255


def test_pgd_stronger_than_fgsm_and_more_steps_help(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = batch(digits_data, 200)
    threat = ThreatModel(eps=0.08)
    fgsm = FGSM(threat=threat).run(digits_victim, x, y).robust_accuracy
    pgd5 = PGD(threat=threat, steps=5).run(digits_victim, x, y).robust_accuracy
    pgd20 = PGD(threat=threat, steps=20, restarts=2).run(digits_victim, x, y).robust_accuracy
    assert pgd20 <= pgd5 <= fgsm
    assert pgd20 < fgsm


def test_same_seed_same_result_other_seed_other_start(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = batch(digits_data, 60)
    attack = PGD(threat=ThreatModel(eps=0.05), steps=3, seed=7)
    a, b = attack.run(digits_victim, x, y), attack.run(digits_victim, x, y)
    c = dataclasses.replace(attack, seed=8).run(digits_victim, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_early_stop_keeps_the_first_adversarial_iterate(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = batch(digits_data)
    threat = ThreatModel(eps=0.15)
    early = PGD(threat=threat, steps=10).run(digits_victim, x, y)
    full = PGD(threat=threat, steps=10, early_stop=False).run(digits_victim, x, y)
    # every sample early-stopped is adversarial, and its perturbation is no larger than the full run's
    assert bool(early.success[early.clean_correct].double().mean() >= full.success[full.clean_correct].double().mean())
    assert float(early.linf.max()) <= 0.15 + 1.2e-7


def test_targeted_pgd_hits_its_targets(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = batch(digits_data, 100)
    targets = (y + 1) % 10
    result = PGD(threat=ThreatModel(eps=0.3, targeted=True), steps=20).run(digits_victim, x, y, target_labels=targets)
    assert torch.equal(result.success, result.y_adv == targets)
    assert result.success_rate > 0.8


def test_contract_errors(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = batch(digits_data, 4)
    with pytest.raises(ConfigError, match="targeted threat model needs target_labels"):
        PGD(threat=ThreatModel(targeted=True)).run(digits_victim, x, y)
    with pytest.raises(ConfigError, match="target_labels given"):
        PGD().run(digits_victim, x, y, target_labels=y)
    with pytest.raises(DataError, match="labels must lie"):
        PGD().run(digits_victim, x, y + 20)
    with pytest.raises(DataError, match="bounds"):
        PGD().run(digits_victim, x * 3 + 1, y)
    with pytest.raises(ConfigError, match="pgd: steps must be >= 1"):
        PGD(steps=0)
    with pytest.raises(ConfigError, match="pgd: loss must be"):
        PGD(loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="supports the linf and l2 norms"):
        PGD(threat=ThreatModel(norm="l0", eps=3))


def test_model_is_not_mutated(digits_model: nn.Module, digits_data: Dataset) -> None:
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    PGD(threat=ThreatModel(eps=0.1), steps=3).run(victim, *batch(digits_data, 30))
    assert not digits_model.training
    assert all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())
    assert all(p.grad is None for p in digits_model.parameters())
