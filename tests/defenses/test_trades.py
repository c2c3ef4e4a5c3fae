"""`trades`: the loss's known answers, the inner maximisation's ball, and robustness gained on digits."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bastion.attacks.evasion.pgd import PGD
from bastion.core import ConfigError, ThreatModel, Victim
from bastion.core.registry import RECIPES
from bastion.data import Dataset
from bastion.defenses.training import TRADES, trades_loss, trades_perturb
from bastion.models import build_model, load_checkpoint
from bastion.train import TrainConfig, train_checkpoint


def new_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)


def test_registered_with_per_shape_defaults() -> None:
    assert RECIPES.get("trades") is TRADES
    gray = TRADES().settings((1, 28, 28))
    assert gray == {"eps": 0.3, "steps": 40, "alpha": 0.01, "beta": 6.0, "warmup": 0.3}
    assert TRADES().settings((3, 32, 32)) == {"eps": 0.031, "steps": 10, "alpha": 0.007, "beta": 6.0, "warmup": 0.0}
    assert TRADES(beta=1.0).settings((1, 8, 8))["beta"] == 1.0
    with pytest.raises(ConfigError, match="trades: beta must be >= 0"):
        TRADES(beta=-1.0)


def test_loss_known_answers(digits_data: Dataset) -> None:
    model = new_cnn()
    x, y = digits_data.x_train[:64], digits_data.y_train[:64]
    ce = F.cross_entropy(model(x), y)
    # KL(p(x) || p(x)) = 0: at x_adv = x the loss is the clean cross-entropy, whatever beta
    assert torch.allclose(trades_loss(model, x, x, y, beta=6.0), ce, atol=1e-6)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert torch.allclose(trades_loss(model, x, x_adv, y, beta=0.0), ce, atol=1e-6)  # beta 0: plain CE
    # the KL term equals the per-sample KL averaged over the batch, computed directly
    p, q = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    assert float(kl.detach()) > 0
    assert torch.allclose(trades_loss(model, x, x_adv, y, beta=2.0), ce + 2.0 * kl, atol=1e-5)


def test_inner_maximisation_raises_kl_inside_the_ball(digits_data: Dataset) -> None:
    model = new_cnn()
    model.train()
    x = digits_data.x_train[:64]
    gen = torch.Generator().manual_seed(0)
    x_adv = trades_perturb(model, x, eps=0.1, alpha=0.02, steps=10, gen=gen)
    assert not model.training  # the reference attacks in eval mode
    assert float((x_adv - x).abs().max()) <= 0.1 + 1.2e-7 and x_adv.min() >= 0 and x_adv.max() <= 1
    p = F.softmax(model(x), 1).detach()

    @torch.no_grad()
    def kl(z: torch.Tensor) -> float:
        return float(F.kl_div(F.log_softmax(model(z), 1), p, reduction="batchmean"))

    noise = (x + 0.1 * (2 * torch.rand(x.shape, generator=gen) - 1)).clamp(0, 1)
    assert kl(x_adv) > 5 * kl(noise)  # ascent beats a random point of the ball
    again = trades_perturb(model, x, eps=0.1, alpha=0.02, steps=10, gen=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, again)  # seeded start


def test_hooks_ramp_and_loss_in_train_mode(digits_data: Dataset) -> None:
    hooks = TRADES(eps=0.1, steps=2, alpha=0.05).hooks(TrainConfig(), (1, 8, 8))
    assert hooks.transform is not None and hooks.pair_loss is not None and hooks.loss is None
    model, x, y = new_cnn(), digits_data.x_train[:16], digits_data.y_train[:16]
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(hooks.transform(model, x, y, gen, 0.0), x)  # eps ramps from 0 over 30%
    x_adv = hooks.transform(model, x, y, gen, 0.6)
    assert 0.05 < float((x_adv - x).abs().max()) <= 0.1 + 1.2e-7


def test_trades_raises_robust_accuracy(tmp_path: Path, digits_data: Dataset) -> None:
    common = {"model": "small_cnn", "data": "digits", "epochs": 4, "device": "cpu"}
    standard = train_checkpoint(out=tmp_path / "std.safetensors", **common)
    robust = train_checkpoint(
        out=tmp_path / "trades.safetensors", recipe="trades", recipe_params={"eps": 0.1, "steps": 5}, **common
    )
    meta = load_checkpoint(robust.path)[1]
    assert meta.recipe["name"] == "trades" and meta.recipe["beta"] is None and meta.recipe["eps"] == 0.1
    x, y = digits_data.x_test[:200], digits_data.y_test[:200]
    attack = PGD(threat=ThreatModel(eps=0.1), steps=10)
    acc = {
        name: attack.run(Victim(out.model, input_shape=(1, 8, 8)), x, y).robust_accuracy
        for name, out in (("standard", standard), ("trades", robust))
    }
    assert acc["trades"] > acc["standard"] + 0.1, acc
    assert robust.meta.clean_accuracy is not None and robust.meta.clean_accuracy > 0.7
