"""AutoAttack: four stages on the still-robust samples, each at least as strong as the one before."""

import itertools

import pytest
import torch
from torch import nn

from bastion.attacks.evasion.apgd import APGDCE
from bastion.attacks.evasion.autoattack import AutoAttack
from bastion.attacks.evasion.square import Square
from bastion.core import ThreatModel, Victim
from bastion.data import Dataset


def test_stages_compose_and_beat_each_stage_alone(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:80], digits_data.y_test[:80]
    threat = ThreatModel(eps=0.08)
    result = AutoAttack(threat=threat, square_queries=300).run(victim, x, y)
    stages = result.extra["stages"]
    assert [s["attack"] for s in stages] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    accs = [s["robust_accuracy"] for s in stages]
    assert accs == sorted(accs, reverse=True)  # robust accuracy never rises from stage to stage
    assert result.robust_accuracy == accs[-1]
    # each stage attacks exactly the samples the earlier ones left robust
    assert stages[0]["attacked"] == int(result.clean_correct.sum())
    for before, after in itertools.pairwise(stages):
        assert after["attacked"] == round(before["robust_accuracy"] * 80)
    apgd = APGDCE(threat=threat).run(victim, x, y)
    assert result.robust_accuracy <= apgd.robust_accuracy
    assert float((result.x_adv - x).abs().max()) <= 0.08 + 2**-23
    assert torch.equal(result.y_adv, victim.predict(result.x_adv))


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 2.0)])
def test_square_stage_takes_autoattacks_own_settings(norm: str, eps: float) -> None:
    """fra31/auto-attack `autoattack.py` gives its Square p_init 0.8, 5,000 queries, one restart and the
    schedule unrescaled for both norms, although Square's own L2 default is the paper's 0.1."""
    threat = ThreatModel(norm=norm, eps=eps)
    square = AutoAttack(threat=threat).stages()[-1]
    assert isinstance(square, Square) and square.threat == threat
    assert (square.p_init, square.n_queries, square.n_restarts) == (0.8, 5000, 1)
    assert not square.rescale_schedule and square.loss == "margin"
