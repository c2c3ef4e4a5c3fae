"""`gradalign`: the alignment regulariser's known answers, double backprop, and robustness on digits."""

from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.attacks.evasion.pgd import PGD
from bastion.core import ConfigError, ThreatModel, Victim
from bastion.core.registry import RECIPES
from bastion.data import Dataset
from bastion.defenses.training import CatastrophicOverfittingMonitor, GradAlign
from bastion.defenses.training.gradalign import gradalign_lambda, input_grad, misalignment
from bastion.models import build_model
from bastion.train import TrainConfig, train_checkpoint


def test_registered_with_per_shape_defaults() -> None:
    assert RECIPES.get("gradalign") is GradAlign
    assert GradAlign().settings((1, 28, 28)) == {"eps": 0.3, "alpha": 0.375, "lam": 1.0}
    assert GradAlign().config((1, 28, 28)).lr == 0.02  # the measured mnist5k setting, not Wong et al.'s 5e-3
    colour = GradAlign().settings((3, 32, 32))
    assert colour["eps"] == 8 / 255 and abs(colour["lam"] - 0.2) < 1e-12  # the reference's 8/255 value
    assert abs(gradalign_lambda(16 / 255) - 2.0) < 1e-12 and abs(gradalign_lambda(4 / 255) - 0.063) < 1e-3
    assert GradAlign(lam=0.5).settings((1, 8, 8))["lam"] == 0.5
    with pytest.raises(ConfigError, match="gradalign: lam must be >= 0"):
        GradAlign(lam=-1.0)
    hooks = GradAlign().hooks(TrainConfig(), (1, 8, 8))
    assert hooks.pair_loss is not None and hooks.transform is None
    assert [type(c) for c in hooks.callbacks] == [CatastrophicOverfittingMonitor]


def reg_at_two_random_points(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    eta1, eta2 = ((2 * torch.rand((2, *x.shape), generator=gen) - 1) * eps).unbind(0)
    g1 = input_grad(model, x + eta1, y, create_graph=False)
    g2 = input_grad(model, x + eta2, y, create_graph=True)
    return misalignment(g1, g2)


def test_regulariser_is_zero_for_a_linear_model_and_positive_otherwise(digits_data: Dataset) -> None:
    x = digits_data.x_train[:64]
    y = (digits_data.y_train[:64] >= 5).long()  # two classes
    torch.manual_seed(0)
    # a linear binary classifier: the input gradient of CE is (p_1 - y_1)(w_1 - w_0), one direction for
    # every input (up to a positive factor), so gradients anywhere in the ball are perfectly aligned
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    assert abs(float(reg_at_two_random_points(linear, x, y, 0.3).detach())) < 1e-6
    torch.manual_seed(0)
    cnn = build_model("small_cnn", num_classes=2, in_channels=1, image_size=8)
    reg = reg_at_two_random_points(cnn, x, y, 0.3)
    assert 0.01 < float(reg.detach()) <= 2.0
    # double backprop: the regulariser has a gradient in the weights
    grads = torch.autograd.grad(reg, [p for p in cnn.parameters() if p.requires_grad], allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_misalignment_known_answers() -> None:
    g = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    assert abs(float(misalignment(g, 2 * g))) < 1e-6  # same direction: 0
    assert abs(float(misalignment(g, -g)) - 2.0) < 1e-6  # opposite: 2
    g2 = g.clone()
    g2[0] = 0  # a zero gradient is left out of the mean
    assert abs(float(misalignment(g2, -g)) - 2.0) < 1e-6
    assert float(misalignment(torch.zeros_like(g), g)) == 0.0


def test_gradalign_raises_robust_accuracy(tmp_path: Path, digits_data: Dataset) -> None:
    common = {"model": "small_cnn", "data": "digits", "epochs": 8, "device": "cpu", "lr": 2e-2}
    standard = train_checkpoint(out=tmp_path / "std.safetensors", **common)
    robust = train_checkpoint(
        out=tmp_path / "ga.safetensors", recipe="gradalign", recipe_params={"eps": 0.1, "lam": 0.2}, **common
    )
    assert robust.meta.recipe["name"] == "gradalign" and robust.meta.recipe["lam"] == 0.2
    x, y = digits_data.x_test[:200], digits_data.y_test[:200]
    attack = PGD(threat=ThreatModel(eps=0.1), steps=10)
    acc = {
        name: attack.run(Victim(out.model, input_shape=(1, 8, 8)), x, y).robust_accuracy
        for name, out in (("standard", standard), ("gradalign", robust))
    }
    assert acc["gradalign"] > acc["standard"] + 0.05, acc
