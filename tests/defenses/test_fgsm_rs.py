"""`fgsm-rs` and the catastrophic-overfitting monitor: the step, the collapse rule, restore and record."""

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.attacks.evasion.pgd import PGD
from bastion.core import ConfigError, ThreatModel, Victim
from bastion.core.registry import RECIPES
from bastion.data import Dataset
from bastion.defenses.training import FGSMRS, CatastrophicOverfittingMonitor, find_collapse
from bastion.defenses.training.fgsm_rs import fgsm_step
from bastion.models import build_model, load_checkpoint
from bastion.models.checkpoint import CheckpointMeta, read_meta, save_checkpoint
from bastion.train import Hooks, TrainConfig, TrainState, fit, train_checkpoint


def new_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)


def test_registered_with_per_shape_defaults() -> None:
    assert RECIPES.get("fgsm-rs") is FGSMRS
    assert FGSMRS().settings((1, 28, 28)) == {"eps": 0.3, "alpha": 0.375}
    colour = FGSMRS().settings((3, 32, 32))
    assert colour["eps"] == 8 / 255 and abs(colour["alpha"] - 10 / 255) < 1e-12
    assert FGSMRS().config((1, 28, 28)).batch_size == 100 and FGSMRS().config((1, 28, 28)).lr == 5e-3
    assert FGSMRS(eps=0.1, alpha=0.5).settings((1, 8, 8)) == {"eps": 0.1, "alpha": 0.5}
    with pytest.raises(ConfigError, match="fgsm-rs: co_drop must be > 0 and < 1"):
        FGSMRS(co_drop=1.5)
    hooks = FGSMRS().hooks(TrainConfig(), (1, 8, 8))
    assert [type(c) for c in hooks.callbacks] == [CatastrophicOverfittingMonitor]  # the monitor is on by default
    assert FGSMRS(co_monitor=False).hooks(TrainConfig(), (1, 8, 8)).callbacks == []


def test_fgsm_step_is_one_signed_step_projected(digits_data: Dataset) -> None:
    model = new_cnn()
    x, y = digits_data.x_train[:64], digits_data.y_train[:64]
    zero = torch.zeros_like(x)
    x_adv = fgsm_step(model, x, y, 0.1, 0.1, zero)
    # from 0 with alpha = eps the step lands on eps * sign(grad), clipped to [0, 1]
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y), xg)
    assert torch.allclose(x_adv, (x + 0.1 * g.sign()).clamp(0, 1))
    start = 0.1 * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 1)
    big = fgsm_step(model, x, y, 0.1, 0.5, start)  # a large step is projected back to the ball
    assert float((big - x).abs().max()) <= 0.1 + 1.2e-7 and big.min() >= 0 and big.max() <= 1


def test_collapse_rule_on_sequences() -> None:
    assert find_collapse([0.1, 0.4, 0.6, 0.65, 0.05]) == 4  # the classic: PGD accuracy falls to ~0
    assert find_collapse([0.1, 0.4, 0.6, 0.5, 0.35]) == 4  # a fall spread over two checks, 0.25 from the best
    assert find_collapse([0.1, 0.4, 0.6, 0.45, 0.5, 0.55]) is None  # noise of up to 0.2 is tolerated
    assert find_collapse([0.5, 0.29]) == 1 and find_collapse([0.5, 0.31]) is None
    assert find_collapse([0.6, 0.3], drop=0.4) is None
    assert find_collapse([]) is None and find_collapse([0.9]) is None
    # near zero from a low start: a collapse only while clean accuracy holds (measured FGSM-at-eps-0.3 trace)
    assert find_collapse([0.043, 0.074, 0.008, 0.0], [0.49, 0.82, 0.855, 0.86]) == 2
    assert find_collapse([0.043, 0.074, 0.008], [0.49, 0.82, 0.3]) is None  # everything fell: not CO
    assert find_collapse([0.03, 0.02], [0.2, 0.5]) is None  # near chance and noisy early: no fall to half
    assert find_collapse([0.04, 0.03], [0.2, 0.5], floor=0.03) is None


class Scripted(CatastrophicOverfittingMonitor):
    """A monitor whose (clean, PGD) accuracy per epoch is given, not measured."""

    def __init__(self, readings: list[tuple[float, float]]) -> None:
        super().__init__(eps=0.3)
        self.readings = readings

    def measure(self, state: TrainState) -> tuple[float, float]:
        return self.readings[state.epoch - 1]


def test_monitor_restores_the_most_robust_check_not_the_last_that_passed() -> None:
    # measured shape (FGSM at eps 0.3, seed 2): robustness gone by epoch 2, flagged only at epoch 5,
    # once clean accuracy is back above that of the most robust check
    monitor = Scripted([(0.77, 0.0625), (0.75, 0.0), (0.68, 0.0), (0.66, 0.0), (0.79, 0.0)])
    model = nn.Linear(2, 2)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    weights = []
    for epoch in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(epoch)  # each epoch's weights are recognisable
        state.epoch = epoch
        weights.append(model.weight.clone())
        monitor.on_epoch_end(state)
        assert state.stop == (epoch == 5)
    (event,) = state.events
    assert event["restored_epoch"] == 1 and event["pgd_accuracy_before"] == 0.0625
    assert torch.equal(model.weight, weights[0])


class Sabotage:
    """Makes a collapse happen: at `epoch`, replaces the weights by noise (after recording the weights
    the monitor should restore, those of the epoch before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.saved = epoch, {}

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch - 1:
            self.saved = {k: v.clone() for k, v in state.model.state_dict().items()}
        if state.epoch == self.epoch:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.normal_(0, 1, generator=torch.Generator().manual_seed(0))


def test_monitor_catches_a_collapse_restores_and_records(
    tmp_path: Path, digits_data: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    ds = digits_data
    model = new_cnn()
    sabotage = Sabotage(epoch=3)
    monitor = CatastrophicOverfittingMonitor(eps=0.02, n=200, seed=0)
    progress = []
    with caplog.at_level(logging.WARNING):
        history = fit(
            model,
            ds.x_train,
            ds.y_train,
            TrainConfig(epochs=4, lr=3e-3),
            x_test=ds.x_test,
            y_test=ds.y_test,
            hooks=Hooks(callbacks=[sabotage, monitor]),
            progress=progress.append,
        )
    assert len(history.epochs) == 3  # stopped at the collapse
    (event,) = history.events
    assert event["event"] == "catastrophic-overfitting" and event["epoch"] == 3 and event["restored_epoch"] == 2
    assert event["pgd_accuracy_before"] > 0.5 and event["pgd_accuracy_after"] < 0.3
    assert event["pgd_accuracy_before"] == monitor.trace[1][2] and event["pgd_accuracy_after"] == monitor.trace[2][2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, sabotage.saved[k]), k  # the last good weights are back
    assert "catastrophic overfitting at epoch 3" in caplog.text
    checks = [e for e in progress if e.task == "co-monitor"]
    assert [e.info["collapse"] for e in checks] == [False, False, True]
    # the event travels into the checkpoint's metadata and back
    meta = CheckpointMeta(
        architecture="small_cnn",
        arch_kwargs={},
        dataset="digits",
        split_seed=0,
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=(0.0,),
        std=(1.0,),
        events=history.events,
    )
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    assert read_meta(path).events == history.events


def test_older_checkpoints_without_events_still_load(tmp_path: Path, digits_data: Dataset) -> None:
    meta = CheckpointMeta(
        architecture="small_cnn", arch_kwargs={}, dataset="digits", split_seed=0, num_classes=10,
        input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,),
    )  # fmt: skip
    d = meta.to_dict()
    del d["events"]  # written before the field existed
    assert CheckpointMeta.from_dict(d).events == ()


def test_monitor_needs_held_out_data_and_sane_settings(digits_data: Dataset) -> None:
    with pytest.raises(ConfigError, match="held-out data"):
        fit(
            new_cnn(),
            digits_data.x_train[:64],
            digits_data.y_train[:64],
            TrainConfig(epochs=1),
            hooks=FGSMRS(eps=0.1).hooks(TrainConfig(), (1, 8, 8)),
        )
    with pytest.raises(ConfigError, match="co-monitor: drop"):
        CatastrophicOverfittingMonitor(eps=0.1, drop=0.0)


def test_fgsm_rs_raises_robust_accuracy_and_records_its_checks(tmp_path: Path, digits_data: Dataset) -> None:
    common = {"model": "small_cnn", "data": "digits", "epochs": 6, "device": "cpu", "lr": 1e-2}
    standard = train_checkpoint(out=tmp_path / "std.safetensors", **common)
    progress = []
    robust = train_checkpoint(
        out=tmp_path / "fgsm.safetensors",
        recipe="fgsm-rs",
        recipe_params={"eps": 0.1},
        progress=progress.append,
        **common,
    )
    meta = load_checkpoint(robust.path)[1]
    assert meta.recipe["name"] == "fgsm-rs" and meta.recipe["eps"] == 0.1 and meta.recipe["co_monitor"] is True
    assert len([e for e in progress if e.task == "co-monitor"]) == len(robust.history.epochs) == 6
    assert robust.history.events == () and meta.events == ()  # no collapse at this step size
    x, y = digits_data.x_test[:200], digits_data.y_test[:200]
    attack = PGD(threat=ThreatModel(eps=0.1), steps=10)
    acc = {
        name: attack.run(Victim(out.model, input_shape=(1, 8, 8)), x, y).robust_accuracy
        for name, out in (("standard", standard), ("fgsm-rs", robust))
    }
    assert acc["fgsm-rs"] > acc["standard"] + 0.1, acc
