"""NTD: the reference's similarities, an independent feature extractor, seeded draws, and on a BadNets
model the trigger that does not transfer to a clean model's features."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from bastion.core import DataError, Victim
from bastion.core.registry import DEFENSES
from bastion.defenses.detect.backdoor import NTD
from bastion.defenses.detect.backdoor.ntd import similarity


def test_similarities_are_the_references_formulas() -> None:
    a, b = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[2.0, 1.0, 1.0]])
    dot = 4.0
    assert float(similarity(a, b, "tanimoto")[0]) == pytest.approx(dot / (5 + 6 - dot))
    assert float(similarity(a, a, "tanimoto")[0]) == pytest.approx(1.0)
    assert float(similarity(a, b, "cosine")[0]) == pytest.approx(dot / (5**0.5 * 6**0.5))
    ac, bc = a - a.mean(), b - b.mean()
    assert float(similarity(a, b, "pearson")[0]) == pytest.approx(float((ac * bc).sum() / (ac.norm() * bc.norm())))
    assert float(similarity(a, torch.tensor([[0.0, 0.0, 5.0]]), "tanimoto")[0]) == 0.0  # orthogonal


def _linear_victim(seed: int) -> Victim:
    torch.manual_seed(seed)
    return Victim(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)), input_shape=(1, 4, 4))


def test_inputs_and_the_feature_extractor_are_checked() -> None:
    victim = _linear_victim(0)
    x = torch.rand(12, 1, 4, 4)
    y = torch.arange(12) % 3
    assert DEFENSES.get("ntd", family="backdoor-input") is NTD
    with pytest.raises(DataError, match="independent model"):
        NTD().run(victim, x, x, x_fit=x, y_fit=y)
    with pytest.raises(DataError, match="at least n \\+ 1 = 5"):
        NTD(n=4).run(victim, x, x, x_fit=x, y_fit=y, reference=_linear_victim(1))
    a = NTD(rounds=20, threshold="quantile").run(victim, x, x, x_fit=x, y_fit=y, reference=_linear_victim(1))
    b = NTD(rounds=20, threshold="quantile").run(victim, x, x, x_fit=x, y_fit=y, reference=_linear_victim(1))
    assert torch.equal(a.scores, b.scores) and a.extra["threshold"] == b.extra["threshold"]
    assert a.extra["forwards_per_input"] == 2 and 0.0 <= a.extra["far_estimate"] <= 1.0


def test_a_trigger_does_not_transfer_to_a_clean_models_features(badnets_mnist5k: Any) -> None:
    # the paper's premise at small scale: the audited (clean) model as the feature extractor sees triggered
    # digits as unlike clean digits of the target class. Measured: AUROC 0.999, TPR 81%, FPR 0% at the
    # reference's 0.5% FRR (log-gamma threshold, 200 held-out images).
    b = badnets_mnist5k
    x, y = b.target.test(1000)
    clean, triggered = b.attack.screening_sets(b.victim, x[:800], y[:800])
    r = NTD().run(b.victim, clean, triggered, x_fit=x[800:], y_fit=y[800:], reference=b.target.victim)
    assert r.auroc >= 0.95 and r.extra["tpr"] >= 0.7 and r.extra["fpr"] <= 0.02, r.extra
    assert r.extra["intra_mean"] > r.extra["inter_mean"]
