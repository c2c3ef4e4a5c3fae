"""APGD-CE, APGD-DLR and APGD-T on a tiny digits model: the paper's claims at small scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion import apgd
from bastion.attacks.evasion.apgd import APGDCE, APGDDLR, APGDT, checkpoint_schedule
from bastion.core import ConfigError, ThreatModel, Victim
from bastion.core.ops import BALL_TOLERANCE, lp_norms
from bastion.core.progress import ProgressEvent
from bastion.data import load_dataset
from bastion.models.checkpoint import load_checkpoint

N = 64  # test images per attack: enough for the margins below, cheap on two busy cores
APGD = type[APGDCE] | type[APGDDLR] | type[APGDT]


@pytest.fixture(scope="module")
def victim(digits_checkpoint: Path) -> Victim:
    model, _ = load_checkpoint(digits_checkpoint)
    return Victim(model, input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def batch() -> tuple[Tensor, Tensor]:
    ds = load_dataset("digits")
    return ds.x_test[:N], ds.y_test[:N]


def noise_accuracy(victim: Victim, x: Tensor, y: Tensor, eps: float) -> float:
    """Accuracy under uniform noise in the L-inf ball: the baseline an attack must beat."""
    gen = torch.Generator().manual_seed(0)
    x_noisy = (x + eps * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1)
    return float((victim.predict(x_noisy) == y).float().mean())


def test_checkpoint_schedule_matches_the_reference() -> None:
    assert checkpoint_schedule(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_schedule(1) == [1]
    assert checkpoint_schedule(10) == list(range(2, 11))


@pytest.mark.parametrize("cls", [APGDCE, APGDDLR, APGDT])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 0.5)])
def test_result_in_ball_and_bounds_and_success_measured(
    victim: Victim, batch: tuple[Tensor, Tensor], cls: APGD, norm: str, eps: float
) -> None:
    x, y = batch
    extra: dict[str, Any] = {"n_target_classes": 2} if cls is APGDT else {}
    result = cls(threat=ThreatModel(norm=norm, eps=eps), steps=10, **extra).run(victim, x, y)
    assert bool((lp_norms(result.x_adv - x, norm) <= eps + BALL_TOLERANCE).all())
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert torch.equal(result.y_adv, victim.predict(result.x_adv))
    clean = victim.predict(x) == y  # per sample: no attack turns a misclassified image into a correct one
    assert not bool(((result.y_adv == y) & ~clean).any())
    assert result.clean_accuracy == pytest.approx(clean.float().mean().item())
    assert result.success_rate > 0
    assert result.warnings == ()


def test_apgd_beats_random_noise_and_is_reproducible(victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    eps = 0.1
    noise = noise_accuracy(victim, x, y, eps)
    events: list[ProgressEvent] = []
    ce = APGDCE(threat=ThreatModel(norm="linf", eps=eps), steps=20).run(victim, x, y, progress=events.append)
    dlr = APGDDLR(threat=ThreatModel(norm="linf", eps=eps), steps=20).run(victim, x, y)
    assert ce.robust_accuracy < noise - 0.2
    assert dlr.robust_accuracy <= noise
    assert events[-1].task == "apgd-ce" and events[-1].completed == events[-1].total == 20
    again = APGDCE(threat=ThreatModel(norm="linf", eps=eps), steps=20).run(victim, x, y)
    assert torch.equal(again.x_adv, ce.x_adv)
    other = APGDCE(threat=ThreatModel(norm="linf", eps=eps), steps=20, seed=1).run(victim, x, y)
    assert not torch.equal(other.x_adv, ce.x_adv)


def test_apgd_t_at_least_as_strong_as_apgd_ce(victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    threat = ThreatModel(norm="linf", eps=0.1)
    ce = APGDCE(threat=threat, steps=20).run(victim, x, y)
    t = APGDT(threat=threat, steps=20, n_target_classes=3).run(victim, x, y)
    assert t.success_rate >= ce.success_rate


@pytest.mark.parametrize("cls", [APGDCE, APGDT])
def test_compaction_changes_no_result(
    victim: Victim, batch: tuple[Tensor, Tensor], cls: APGD, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropping fooled samples from the batch changes nothing for the others (samples are independent)."""
    x, y = batch
    extra: dict[str, Any] = {"n_target_classes": 2} if cls is APGDT else {}
    attack = cls(threat=ThreatModel(norm="linf", eps=0.1), steps=25, n_restarts=2, **extra)
    compacted = attack.run(victim, x, y)
    monkeypatch.setattr(apgd, "_COMPACT", False)
    full = attack.run(victim, x, y)
    assert 0 < compacted.success_rate < 1
    assert torch.equal(compacted.success, full.success)
    assert torch.equal(compacted.x_adv, full.x_adv)


class Constant(nn.Module):
    """Logits that do not depend on the input (a zero-weight layer): every gradient is zero."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(64, num_classes)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.arange(num_classes, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class BrokenGradient(Constant):
    """Finite logits whose input gradient is NaN (0 * the infinite slope of sqrt at 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + 0 * torch.sqrt(x - x).flatten(1).sum(1, keepdim=True)


def test_zero_gradient_is_reported_for_dlr_losses() -> None:
    victim = Victim(Constant(), input_shape=(1, 8, 8))
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.full((5,), 9)  # the constant prediction: all five are attacked
    for cls in (APGDDLR, APGDT):
        result = cls(threat=ThreatModel(eps=0.1), steps=3).run(victim, x, y)
        assert result.success_rate == 0
        assert any("5 of 5 samples have an all-zero gradient" in w for w in result.warnings), result.warnings
    broken = APGDCE(threat=ThreatModel(eps=0.1), steps=3).run(Victim(BrokenGradient(), input_shape=(1, 8, 8)), x, y)
    assert any("NaN gradient" in w for w in broken.warnings), broken.warnings
    assert not broken.x_adv.isnan().any()


def test_too_few_classes() -> None:
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="DLR loss needs at least 3 classes; the model has 2"):
        APGDDLR(threat=ThreatModel(eps=0.1), steps=2).run(
            Victim(Constant(2), input_shape=(1, 8, 8)), x, torch.ones(3, dtype=torch.long)
        )
    with pytest.raises(ConfigError, match="targeted DLR loss needs at least 4 classes"):
        APGDT(threat=ThreatModel(eps=0.1), steps=2).run(
            Victim(Constant(3), input_shape=(1, 8, 8)), x, torch.full((3,), 2, dtype=torch.long)
        )
    five = APGDT(threat=ThreatModel(eps=0.1), steps=2).run(
        Victim(Constant(5), input_shape=(1, 8, 8)), x, torch.full((3,), 4, dtype=torch.long)
    )
    assert any("tried the 4 other classes" in w for w in five.warnings)
    with pytest.raises(ConfigError, match="untargeted"):
        APGDT(threat=ThreatModel(eps=0.1, targeted=True))
