"""`fgsm-rs` and the catastrophic-overfitting monitor: the step, the collapse rule, restore and record."""

import logging
from pathlib import Path
from typing import Any

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
from bastion.train import Callback, Hooks, TrainConfig, TrainState, fit, train_checkpoint


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


def test_collapse_rule_is_the_references_fall_from_the_previous_check() -> None:
    assert find_collapse([0.1, 0.4, 0.6, 0.65, 0.05]) == 4  # the classic: PGD accuracy falls to ~0
    assert find_collapse([0.5, 0.29]) == 1 and find_collapse([0.5, 0.31]) is None  # more than 0.2
    assert find_collapse([0.1, 0.4, 0.6, 0.45, 0.5, 0.55]) is None  # noise of up to 0.2 is tolerated
    assert find_collapse([0.6, 0.3], drop=0.4) is None and find_collapse([0.6, 0.3], drop=0.25) == 1
    assert find_collapse([]) is None and find_collapse([0.9]) is None  # the first check is compared with 0
    # the previous check, not the best: a fall spread over checks of at most 0.2 each is not one
    assert find_collapse([0.6, 0.45, 0.3, 0.15, 0.0]) is None
    # measured (`fgsm-rs` on mnist5k, eps 0.4, alpha 2 eps, lr 0.02, checks every 50 steps): a model that
    # was never robust while clean accuracy rose 47% -> 91%. The earlier rule (at most 2% and under half
    # the best while clean accuracy holds) fired at step 100 and handed back the untrained step-50 model.
    assert find_collapse([0.11, 0.0, 0.01, 0.0, 0.0]) is None


class Scripted(CatastrophicOverfittingMonitor):
    """A monitor whose PGD accuracy per check is given, not measured; it records the batches it checks."""

    def __init__(self, readings: list[float], **kwargs: Any) -> None:
        super().__init__(eps=0.3, **kwargs)
        self.readings, self.checked = readings, []

    def measure(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        self.checked.append(x)
        return 0.9, self.readings[len(self.checked) - 1]


def test_monitor_checks_every_n_steps_and_after_the_last_on_full_batches(digits_data: Dataset) -> None:
    batches: dict[int, torch.Tensor] = {}

    class Spy(Callback):
        def on_step_end(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> None:
            batches[state.step] = x

    monitor = Scripted([0.5] * 3, every=5)
    history = fit(
        new_cnn(),
        digits_data.x_train[:160],
        digits_data.y_train[:160],
        TrainConfig(epochs=4, batch_size=64),
        hooks=Hooks(callbacks=[Spy(), monitor]),
    )  # 3 steps an epoch (64, 64 and 32 images): 12 in all
    assert [(c.epoch, c.step) for c in monitor.trace] == [(2, 5), (4, 10), (4, 12)]
    assert history.events == () and len(history.epochs) == 4
    assert monitor.checked[0] is batches[5] and monitor.checked[1] is batches[10]
    # step 12 trained on an epoch's last 32 images: the check takes the full batch of step 11
    assert batches[12].shape[0] == 32 and monitor.checked[2] is batches[11]


def test_monitor_restores_the_last_check_that_passed_not_the_most_robust() -> None:
    monitor = Scripted([0.3, 0.5, 0.45, 0.1, 0.8], every=10)
    model = nn.Linear(2, 2)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), total_steps=100)
    weights = []
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    for check in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(check)  # each check's weights are recognisable
        weights.append(model.weight.clone())
        state.step, state.epoch = 10 * check, check
        monitor.on_step_end(state, x, y)
        assert state.stop == (check == 4)
    (event,) = state.events
    assert event["step"] == 40 and event["restored_step"] == 30 and event["restored_epoch"] == 3
    assert event["pgd_accuracy_before"] == 0.45 and event["pgd_accuracy_after"] == 0.1
    assert torch.equal(model.weight, weights[2])  # the third check's, though the second was more robust


class Sabotage(Callback):
    """Makes a collapse happen: after step `step`, replaces the weights by noise (having saved the
    weights of step `saved_at`, which the monitor should restore)."""

    def __init__(self, step: int, saved_at: int) -> None:
        self.step, self.saved_at, self.saved = step, saved_at, {}

    def on_step_end(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> None:
        if state.step == self.saved_at:
            self.saved = {k: v.clone() for k, v in state.model.state_dict().items()}
        if state.step == self.step:
            with torch.no_grad():
                for p in state.model.parameters():
                    p.normal_(0, 1, generator=torch.Generator().manual_seed(0))


def test_monitor_catches_a_collapse_mid_epoch_restores_and_records(
    tmp_path: Path, digits_data: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    ds = digits_data
    model = new_cnn()
    sabotage = Sabotage(step=60, saved_at=40)
    monitor = CatastrophicOverfittingMonitor(eps=0.02, every=20, seed=0)
    batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    class Spy(Callback):
        def on_step_end(self, state: TrainState, x: torch.Tensor, y: torch.Tensor) -> None:
            batches[state.step] = (x, y)

    progress = []
    with caplog.at_level(logging.WARNING):
        history = fit(
            model,
            ds.x_train,
            ds.y_train,
            TrainConfig(epochs=4, batch_size=64, lr=3e-3),
            x_test=ds.x_test,
            y_test=ds.y_test,
            hooks=Hooks(callbacks=[Spy(), sabotage, monitor]),
            progress=progress.append,
        )
    # 23 steps an epoch: step 60 is in epoch 3, which ends there and is recorded
    assert len(history.epochs) == 3 and [c.step for c in monitor.trace] == [20, 40, 60]
    (event,) = history.events
    assert event["event"] == "catastrophic-overfitting" and (event["epoch"], event["step"]) == (3, 60)
    assert event["restored_step"] == 40 and event["restored_epoch"] == 2 and event["batch_size"] == 64
    assert event["pgd_accuracy_before"] > 0.5 and event["pgd_accuracy_after"] < 0.3
    assert event["pgd_accuracy_before"] == monitor.trace[1].pgd and event["pgd_accuracy_after"] == monitor.trace[2].pgd
    for k, v in model.state_dict().items():
        assert torch.equal(v, sabotage.saved[k]), k  # the last good weights are back
    # re-measured on the batch of the check that passed: the restored model is that check's model
    assert monitor.measure(model, *batches[40]) == (event["clean_accuracy_before"], event["pgd_accuracy_before"])
    assert monitor.measure(model, *batches[60])[1] > event["pgd_accuracy_after"] + 0.2
    assert "catastrophic overfitting at step 60 (epoch 3)" in caplog.text
    checks = [e for e in progress if e.task == "co-monitor"]
    assert [(e.completed, e.info["collapse"]) for e in checks] == [(20, False), (40, False), (60, True)]
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


class ModeSpy(nn.Module):
    """Batch norm and dropout (which train mode makes batch- and draw-dependent) and a log of the modes seen."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Flatten(),
            nn.Linear(512, 10),
        )
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.body(x)


def test_the_check_runs_in_train_mode_and_leaves_training_unchanged(digits_data: Dataset) -> None:
    ds = digits_data
    x, y = ds.x_train[:64], ds.y_train[:64]
    model = ModeSpy().eval()
    running = model.body[1].running_mean.clone()
    monitor = CatastrophicOverfittingMonitor(eps=0.1, seed=0)
    before = torch.get_rng_state()
    first = monitor.measure(model, x, y)
    assert torch.equal(torch.get_rng_state(), before)  # the dropout draws inside leave the global state
    assert monitor.measure(model, x, y) == first  # same weights and batch: the same numbers
    assert model.modes and all(model.modes) and not model.training  # train mode inside, eval mode back
    assert torch.equal(model.body[1].running_mean, running)  # running statistics untouched

    def train(monitored: bool) -> tuple[dict[str, torch.Tensor], int]:
        net = ModeSpy()
        cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, seed=0)
        hooks = FGSMRS(eps=0.1, co_monitor=monitored, co_every=5).hooks(cfg, (1, 8, 8))
        torch.manual_seed(2)  # dropout draws from the global generator
        history = fit(net, ds.x_train[:640], ds.y_train[:640], cfg, hooks=hooks)
        assert history.events == ()
        checks = hooks.callbacks[0].trace if monitored else []
        return net.state_dict(), len(checks)

    (plain, _), (watched, n_checks) = train(False), train(True)
    assert n_checks == 4  # steps 5, 10, 15, 20
    for k, v in plain.items():
        assert torch.equal(v, watched[k]), k  # a silent monitor changes no weight and no running statistic


def test_older_checkpoints_without_events_still_load(tmp_path: Path, digits_data: Dataset) -> None:
    meta = CheckpointMeta(
        architecture="small_cnn", arch_kwargs={}, dataset="digits", split_seed=0, num_classes=10,
        input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,),
    )  # fmt: skip
    d = meta.to_dict()
    del d["events"]  # written before the field existed
    assert CheckpointMeta.from_dict(d).events == ()


def test_monitor_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="co-monitor: drop"):
        CatastrophicOverfittingMonitor(eps=0.1, drop=0.0)
    with pytest.raises(ConfigError, match="co-monitor: steps and every"):
        CatastrophicOverfittingMonitor(eps=0.1, every=0)
    with pytest.raises(ConfigError, match="co-monitor: eps"):
        CatastrophicOverfittingMonitor(eps=0.0)
    with pytest.raises(ConfigError, match="fgsm-rs: co_every"):
        FGSMRS(co_every=0)


def test_fgsm_rs_raises_robust_accuracy_and_records_its_checks(tmp_path: Path, digits_data: Dataset) -> None:
    common = {"model": "small_cnn", "data": "digits", "epochs": 6, "device": "cpu", "lr": 1e-2}
    standard = train_checkpoint(out=tmp_path / "std.safetensors", **common)
    progress = []
    robust = train_checkpoint(
        out=tmp_path / "fgsm.safetensors",
        recipe="fgsm-rs",
        recipe_params={"eps": 0.1, "alpha": 0.2},  # the step that collapses CIFAR-10 training (Wong et al.)
        progress=progress.append,
        **common,
    )
    meta = load_checkpoint(robust.path)[1]
    assert meta.recipe["name"] == "fgsm-rs" and meta.recipe["eps"] == 0.1 and meta.recipe["co_monitor"] is True
    assert meta.recipe["co_every"] == 50 and len(robust.history.epochs) == 6
    # 1,438 images in batches of 100: 15 steps an epoch, 90 in all; checks every 50 and after the last
    assert [e.completed for e in progress if e.task == "co-monitor"] == [50, 90]
    # on the 8x8 digits even 2 eps does not collapse (nor at eps 0.15 to 0.35, 10 to 60 epochs, Adam or
    # SGD: docs/defenses.md), and the monitor, checking 100-image batches, stays silent
    assert robust.history.events == () and meta.events == ()
    x, y = digits_data.x_test[:200], digits_data.y_test[:200]
    attack = PGD(threat=ThreatModel(eps=0.1), steps=10)
    acc = {
        name: attack.run(Victim(out.model, input_shape=(1, 8, 8)), x, y).robust_accuracy
        for name, out in (("standard", standard), ("fgsm-rs", robust))
    }
    assert acc["fgsm-rs"] > acc["standard"] + 0.1, acc
