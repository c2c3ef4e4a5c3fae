"""The gradient-masking sanity checks fire on models built to mask gradients, and stay quiet otherwise."""

import torch
from torch import nn

from bastion.attacks.evasion.checks import sanity_checks
from bastion.attacks.evasion.pgd import PGD
from bastion.core import ThreatModel, Victim
from bastion.data import Dataset


class Quantized(nn.Module):
    """Rounds its input to 4 levels before the model: the gradient through the rounding is zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 3) / 3)


class Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def codes(warnings: list[str]) -> set[str]:
    return {w[1 : w.index("]")] for w in warnings}


def evaluate(model: nn.Module, data: Dataset, eps: float = 0.1) -> list[str]:
    victim = Victim(model, input_shape=(1, 8, 8))
    x, y = data.x_test[:40], data.y_test[:40]
    attack = PGD(threat=ThreatModel(eps=eps), steps=20)
    result = attack.run(victim, x, y)
    return sanity_checks(attack, result, victim, x, y)


def test_an_honest_model_passes(digits_model: nn.Module, digits_data: Dataset) -> None:
    assert evaluate(digits_model, digits_data) == []


def test_masked_gradients_are_flagged(digits_model: nn.Module, digits_data: Dataset) -> None:
    warnings = evaluate(Quantized(digits_model), digits_data)
    assert {"zero-gradient", "eps-large"} <= codes(warnings)
    assert all("probably overestimated" in w and "docs/checks.md#" in w for w in warnings)


def test_randomized_model_is_flagged(digits_model: nn.Module, digits_data: Dataset) -> None:
    assert "randomized" in codes(evaluate(Noisy(digits_model), digits_data))


def test_probability_outputs_are_flagged(digits_model: nn.Module, digits_data: Dataset) -> None:
    assert "probabilities" in codes(evaluate(Softmaxed(digits_model), digits_data))
