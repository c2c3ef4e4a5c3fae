"""FGSM, PGD (and MI-FGSM's early stop), and the contract `Attack.run` enforces for every attack."""

import dataclasses

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.mi_fgsm import MIFGSM
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


class LinearPath:
    """A two-class linear model on 4x4 inputs, where every iterate of a sign-gradient attack is known.

    Logits (0, w.x + b). For label 0 the cross-entropy gradient is p_1 w, for label 1 it is -p_0 w:
    its sign is +-sign(w) at every point, so without a random start iterate k is x + k alpha s (s =
    sign(w) for label 0, -sign(w) for label 1; alpha * steps <= eps and the inputs in [0.2, 0.8], so
    neither the ball nor the bounds clip it), and the margin of the true class falls by alpha ||w||_1
    per step: sample i is first misclassified at step ceil(m_i / (alpha ||w||_1)) (m_i its clean
    margin), the first iterate an early-stopped attack may keep.
    """

    def __init__(self, n: int = 64, alpha: float = 0.02, steps: int = 10) -> None:
        gen = torch.Generator().manual_seed(0)
        self.alpha, self.steps = alpha, steps
        self.w = torch.randn(16, generator=gen)
        self.x = 0.2 + 0.6 * torch.rand(n, 1, 4, 4, generator=gen)
        u = self.x.flatten(1) @ self.w
        self.b = -float(u.mean()) - 1.2  # clean margins of label 0: about 0 to 3.5, 1 to 14 steps
        self.y = torch.zeros(n, dtype=torch.long)
        self.y[:3] = 1  # misclassified when clean (the first margins are positive): left untouched
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        with torch.no_grad():
            self.model[1].weight.copy_(torch.stack([torch.zeros(16), self.w]))
            self.model[1].bias.copy_(torch.tensor([0.0, self.b]))
        margin = (u.double() + self.b) * torch.where(self.y == 1, 1.0, -1.0)  # z_y - z_other
        per_step = alpha * float(self.w.double().abs().sum())
        ratio = margin / per_step
        # no margin within float noise of a step boundary: the step each sample flips at is unambiguous
        assert bool(((ratio - ratio.round()).abs() > 1e-3).all())
        self.correct = margin > 0
        self.flip = torch.where(self.correct, ratio.ceil(), torch.zeros_like(ratio)).long()  # (n,)
        self.direction = (self.w.sign() * torch.where(self.y == 1, -1.0, 1.0)[:, None]).view(-1, 1, 4, 4)

    def iterate(self, k: Tensor) -> Tensor:
        """Iterate k (n,) of each sample, k alpha-steps from its clean input."""
        return self.x + (k.double() * self.alpha).float().view(-1, 1, 1, 1) * self.direction


@pytest.mark.parametrize("make", [PGD, MIFGSM], ids=["pgd", "mi-fgsm"])
@pytest.mark.parametrize("early_stop", [True, False])
def test_early_stop_keeps_the_first_misclassified_iterate(make: type, early_stop: bool) -> None:
    """Per sample, the result is the first misclassified iterate with `early_stop`, the last without."""
    path = LinearPath()
    victim = Victim(path.model, input_shape=(1, 4, 4))
    extra = {"random_start": False} if make is PGD else {}
    attack = make(threat=ThreatModel(eps=0.25), steps=path.steps, alpha=path.alpha, early_stop=early_stop, **extra)
    result = attack.run(victim, path.x, path.y)
    assert torch.equal(result.clean_correct, path.correct)
    flipped = path.flip <= path.steps
    # the data spread the first flips over the run: after one step, after the last, never within the steps
    assert {1, path.steps} <= set(path.flip[path.correct].tolist()) and int((~flipped).sum()) >= 3
    kept = torch.where(flipped, path.flip, path.steps) if early_stop else torch.full_like(path.flip, path.steps)
    kept = torch.where(path.correct, kept, 0)  # samples wrong when clean keep k = 0: their clean input
    torch.testing.assert_close(result.x_adv, path.iterate(kept), rtol=0, atol=1e-6)
    assert torch.equal(result.success[path.correct], flipped[path.correct])


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
