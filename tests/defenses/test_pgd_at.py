"""`pgd-at`: the recipe attacks every batch in eval mode and the result resists PGD better."""

from pathlib import Path

import pytest
import torch

from bastion.attacks.evasion.pgd import PGD
from bastion.core import ConfigError, ThreatModel, Victim
from bastion.core.registry import RECIPES
from bastion.data import Dataset
from bastion.defenses.training import PGDAT
from bastion.models import load_checkpoint
from bastion.train import train_checkpoint


def test_registered_with_per_shape_defaults() -> None:
    assert RECIPES.get("pgd-at") is PGDAT
    assert PGDAT().settings((1, 28, 28)) == {"eps": 0.3, "steps": 40, "alpha": 0.01, "warmup": 0.3}
    assert PGDAT().settings((3, 32, 32)) == {"eps": 8 / 255, "steps": 10, "alpha": 2 / 255, "warmup": 0.0}
    assert PGDAT(eps=0.1).settings((1, 8, 8))["eps"] == 0.1
    with pytest.raises(ConfigError, match="pgd-at: steps must be >= 1"):
        PGDAT(steps=0)


def test_hook_attacks_in_eval_mode_inside_the_ball(digits_data: Dataset) -> None:
    from bastion.models import build_model
    from bastion.train import TrainConfig

    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=[0.3], std=[0.4])
    model.train()
    hook = PGDAT(eps=0.1, steps=3, alpha=0.05).hooks(TrainConfig(), (1, 8, 8)).transform
    assert hook is not None
    x, y = digits_data.x_train[:32], digits_data.y_train[:32]
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(hook(model, x, y, gen, 0.0), x)  # eps ramps up from 0 over the first 30%
    half = hook(model, x, y, gen, 0.15)
    assert 0.04 < float((half - x).abs().max()) <= 0.05 + 1.2e-7
    x_adv = hook(model, x, y, gen, 0.5)
    assert float((x_adv - x).abs().max()) <= 0.1 + 1.2e-7 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not model.training  # the attack ran in eval mode (the loop switches back)
    assert all(p.requires_grad for p in model.parameters())  # the model stays trainable


def test_adversarial_training_raises_robust_accuracy(tmp_path: Path, digits_data: Dataset) -> None:
    common = {"model": "small_cnn", "data": "digits", "epochs": 4, "device": "cpu"}
    standard = train_checkpoint(out=tmp_path / "std.safetensors", **common)
    robust = train_checkpoint(
        out=tmp_path / "adv.safetensors", recipe="pgd-at", recipe_params={"eps": 0.1, "steps": 5}, **common
    )
    meta = load_checkpoint(robust.path)[1]
    assert meta.recipe["name"] == "pgd-at" and meta.recipe["eps"] == 0.1 and meta.recipe["steps"] == 5
    x, y = digits_data.x_test[:200], digits_data.y_test[:200]
    attack = PGD(threat=ThreatModel(eps=0.1), steps=10)
    acc = {
        name: attack.run(Victim(out.model, input_shape=(1, 8, 8)), x, y).robust_accuracy
        for name, out in (("standard", standard), ("pgd-at", robust))
    }
    assert acc["pgd-at"] > acc["standard"] + 0.1, acc
