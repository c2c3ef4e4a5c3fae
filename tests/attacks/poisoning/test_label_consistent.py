"""Label-consistent backdoor: the reference's trigger cells (its imperfect checkerboard included), poisons
drawn from the target class only with their labels kept, the PGD step inside its ball and computed on
the surrogate it is given, and the plan checks that name a robust recipe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.attacks.poisoning import LabelConsistent
from bastion.attacks.poisoning.label_consistent import trigger_cells
from bastion.audit import parse_plan
from bastion.core import ConfigError, DataError, Victim


def test_the_trigger_is_the_references_pattern() -> None:
    x = torch.full((2, 1, 6, 6), 0.5)
    out = LabelConsistent().apply_trigger(x)
    corner = out[0, 0, -3:, -3:]
    assert corner.tolist() == [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]  # (-3, -3) black: the quirk
    assert (out[:, :, :-3] == 0.5).all() and (out[:, :, :, :-3] == 0.5).all()
    reduced = LabelConsistent(amplitude=0.1).apply_trigger(x)[0, 0, -3:, -3:]
    assert torch.allclose(reduced, torch.tensor([[0.4, 0.4, 0.6], [0.4, 0.6, 0.4], [0.6, 0.4, 0.6]]))
    assert len(trigger_cells("all-corners")) == 36
    everywhere = LabelConsistent(trigger="all-corners").apply_trigger(x)[0, 0]
    assert everywhere[0, 0] == 1 and everywhere[0, -1] == 1 and everywhere[-1, 0] == 1 and everywhere[2, 2] == 1
    with pytest.raises(ConfigError, match="does not fit"):
        LabelConsistent(trigger="all-corners").apply_trigger(torch.zeros(1, 1, 5, 5))


class _Recorder(nn.Module):
    """A linear model that remembers it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def test_poisons_are_target_class_images_with_their_labels_and_a_bounded_pgd_step() -> None:
    torch.manual_seed(0)
    x = torch.rand(90, 1, 6, 6) * 0.6 + 0.2
    y = torch.arange(90) % 3
    model = _Recorder()
    surrogate = Victim(model, input_shape=(1, 6, 6))
    lc = LabelConsistent(rate=0.2, target=1, eps=0.05, steps=5, seed=3)
    p = lc.poison(x, y, 3, surrogate=surrogate)
    assert p.index.numel() == 18 and (y[p.index] == 1).all() and torch.equal(p.y, y)
    assert model.calls > 0  # crafted on the surrogate it was given
    rest = torch.ones(90, dtype=torch.bool)
    rest[p.index] = False
    assert torch.equal(p.x[rest], x[rest])
    inside = p.x[p.index][:, :, :-3, :-3] - x[p.index][:, :, :-3, :-3]  # away from the trigger: the PGD step
    assert inside.abs().max() <= 0.05 + 1e-6 and inside.abs().max() > 0.01
    assert torch.equal(p.x[p.index], lc.apply_trigger(p.x[p.index]))  # the trigger on top
    plain = LabelConsistent(rate=0.2, target=1, adversarial=False, seed=3).poison(x, y, 3)
    assert torch.equal(plain.index, p.index) and torch.equal(plain.x[plain.index], lc.apply_trigger(x[p.index]))
    assert LabelConsistent().crafting_recipe == "fgsm-rs" and LabelConsistent(adversarial=False).crafting_recipe is None


def test_mistakes() -> None:
    x, y = torch.rand(30, 1, 6, 6), torch.arange(30) % 3
    with pytest.raises(ConfigError, match="surrogate"):
        LabelConsistent(rate=0.1).poison(x, y, 3)
    with pytest.raises(DataError, match="class 0 has 10"):
        LabelConsistent(rate=0.5, adversarial=False).poison(x, y, 3)
    with pytest.raises(ConfigError, match="all-to-one"):
        LabelConsistent(mode="all-to-all")
    with pytest.raises(ConfigError, match='Did you mean "fgsm-rs"'):
        parse_plan("scenarios:\n  - attack: label-consistent\n    params: {surrogate_recipe: fgsm-r}\n")
