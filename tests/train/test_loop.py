import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.core import ConfigError, make_generator
from bastion.data import load_dataset
from bastion.models import build_model, load_checkpoint
from bastion.train import Callback, Hooks, TrainConfig, TrainState, accuracy, fit, train_like
from bastion.train.augment import augment_batch, random_crop
from bastion.train.recipes import Standard


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits")
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def new_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", num_classes=10, in_channels=1, image_size=8, hidden=(64,))


def test_training_learns_digits(digits: tuple[torch.Tensor, ...]) -> None:
    x, y, xt, yt = digits
    model = new_mlp()
    before = accuracy(model, xt, yt)
    history = fit(model, x, y, TrainConfig(epochs=4, lr=3e-3), x_test=xt, y_test=yt)
    assert before < 0.3
    assert history.final_test_accuracy is not None and history.final_test_accuracy > 0.85
    assert len(history.epochs) == 4 and history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert not model.training


def test_same_seed_same_model_other_seed_other_model(digits: tuple[torch.Tensor, ...]) -> None:
    x, y, *_ = digits
    cfg = TrainConfig(epochs=1, augment="shift", seed=5)
    runs = []
    for seed in (5, 5, 6):
        model = new_mlp()
        fit(model, x[:512], y[:512], TrainConfig(**{**cfg.__dict__, "seed": seed}))
        runs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_hooks_transform_loss_and_callbacks(digits: tuple[torch.Tensor, ...]) -> None:
    x, y, *_ = digits
    seen: list[tuple[bool, int]] = []

    def transform(
        model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator, done: float
    ) -> torch.Tensor:
        model.eval()  # an attack would run in eval mode; the loop must switch back
        seen.append((done, xb.shape[0]))
        return torch.zeros_like(xb)

    modes: list[bool] = []

    def loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        modes.append(model.training)
        assert torch.count_nonzero(xb) == 0  # the loss sees the transformed batch
        return F.cross_entropy(model(xb), yb)

    class StopAfterFirst(Callback):
        def on_epoch_end(self, state: TrainState) -> None:
            state.events.append({"epoch": state.epoch, "steps": state.step})
            state.stop = True

    history = fit(
        new_mlp(),
        x[:256],
        y[:256],
        TrainConfig(epochs=3, batch_size=64),
        hooks=Hooks(transform=transform, loss=loss, callbacks=[StopAfterFirst()]),
    )
    assert len(history.epochs) == 1
    assert history.events == ({"epoch": 1, "steps": 4},)
    assert [n for _, n in seen] == [64, 64, 64, 64]
    assert [t for t, _ in seen] == [0, 1 / 12, 2 / 12, 3 / 12]  # 4 of 3 x 4 planned steps
    assert all(modes)  # train mode restored for the update


def test_progress_events_cover_every_step(digits: tuple[torch.Tensor, ...]) -> None:
    x, y, *_ = digits
    events = []
    fit(new_mlp(), x[:200], y[:200], TrainConfig(epochs=2, batch_size=100), progress=events.append)
    train = [e for e in events if e.task == "train"]
    assert [e.completed for e in train] == [1, 2, 3, 4] and train[-1].total == 4
    assert [e.completed for e in events if e.task == "epoch"] == [1, 2]


def test_random_crop_translates_images() -> None:
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    out = random_crop(x, 2, make_generator(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # the blob never leaves the frame
    assert len({tuple(o.nonzero()[0].tolist()) for o in out}) > 5  # offsets vary across the batch
    flipped = augment_batch(torch.rand(16, 3, 8, 8), "crop-flip", make_generator(1))
    assert flipped.shape == (16, 3, 8, 8)
    assert torch.equal(augment_batch(x, "none", make_generator(0)), x)


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("lr", -1.0), ("optimizer", "rmsprop"), ("augment", "mixup")]
)
def test_config_validation(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"training {field}"):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_pair_loss_sees_clean_and_transformed_batch_and_callbacks_see_held_out_data(
    digits: tuple[torch.Tensor, ...],
) -> None:
    x, y, xt, yt = digits
    pairs: list[tuple[bool, bool]] = []

    def pair_loss(
        model: nn.Module, xc: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        pairs.append((torch.equal(xc, 1 - xb), isinstance(gen, torch.Generator)))
        return F.cross_entropy(model(xb), yb)

    seen: list[int] = []

    class HeldOut(Callback):
        def on_epoch_end(self, state: TrainState) -> None:
            assert state.x_val is not None and state.total_steps == 4
            seen.append(state.x_val.shape[0])

    history = fit(
        new_mlp(),
        x[:128],
        y[:128],
        TrainConfig(epochs=2, batch_size=64),
        x_test=xt,
        y_test=yt,
        hooks=Hooks(transform=lambda m, xb, yb, g, d: 1 - xb, pair_loss=pair_loss, callbacks=[HeldOut()]),
    )
    assert pairs == [(True, True)] * 4 and seen == [xt.shape[0]] * 2
    assert all(math.isnan(e.train_accuracy) for e in history.epochs)
    with pytest.raises(ConfigError, match="a loss or a pair_loss"):
        Hooks(loss=lambda m, a, b: a.sum(), pair_loss=pair_loss)


def test_step_callbacks_see_each_clean_batch_and_a_stop_ends_the_epoch_there(
    digits: tuple[torch.Tensor, ...],
) -> None:
    x, y, xt, yt = digits
    steps: list[tuple[int, int, int, bool]] = []
    epoch_ends: list[int] = []

    class StopAtStep5(Callback):
        def on_step_end(self, state: TrainState, xb: torch.Tensor, yb: torch.Tensor) -> None:
            # the clean batch (the transform below zeroes what the update sees), after the step
            steps.append((state.epoch, state.step, xb.shape[0], bool(torch.count_nonzero(xb))))
            state.stop = state.step == 5

        def on_epoch_end(self, state: TrainState) -> None:
            epoch_ends.append(state.epoch)

    progress = []
    history = fit(
        new_mlp(),
        x[:160],
        y[:160],
        TrainConfig(epochs=3, batch_size=64),
        x_test=xt,
        y_test=yt,
        hooks=Hooks(transform=lambda m, xb, yb, g, d: torch.zeros_like(xb), callbacks=[StopAtStep5()]),
        progress=progress.append,
    )
    # 160 images in batches of 64: 3 steps an epoch, the last of 32 images
    assert steps == [
        (1, 1, 64, True),
        (1, 2, 64, True),
        (1, 3, 32, True),
        (2, 4, 64, True),
        (2, 5, 64, True),
    ]
    assert epoch_ends == [1]  # epoch 2 stopped inside: recorded, but no epoch-end callback
    assert [e.epoch for e in history.epochs] == [1, 2]
    assert history.epochs[1].test_accuracy is not None
    assert [e.completed for e in progress if e.task == "epoch"] == [1, 2]
    assert [e.completed for e in progress if e.task == "train"] == [1, 2, 3, 4, 5]


def test_a_stopped_epoch_averages_over_the_batches_it_ran(digits: tuple[torch.Tensor, ...]) -> None:
    x, y, *_ = digits
    losses: list[float] = []

    def loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        value = F.cross_entropy(model(xb), yb)
        losses.append(float(value.detach()))
        return value

    class StopAtStep2(Callback):
        def on_step_end(self, state: TrainState, xb: torch.Tensor, yb: torch.Tensor) -> None:
            state.stop = state.step == 2

    history = fit(
        new_mlp(), x[:256], y[:256], TrainConfig(epochs=1, batch_size=64),
        hooks=Hooks(loss=loss, callbacks=[StopAtStep2()]),
    )  # fmt: skip
    (record,) = history.epochs
    assert len(losses) == 2 and math.isclose(record.train_loss, sum(losses) / 2, rel_tol=1e-6)


def test_a_batch_edit_runs_on_each_batch_as_drawn_before_augmentation(digits: tuple[torch.Tensor, ...]) -> None:
    x, y, *_ = digits
    drawn: list[torch.Tensor] = []
    trained: list[tuple[torch.Tensor, torch.Tensor]] = []

    def edit(xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        drawn.append(yb.clone())
        return torch.ones_like(xb), torch.full_like(yb, 7)  # every image white, every label 7

    class Seen(Callback):
        def on_step_end(self, state: TrainState, xb: torch.Tensor, yb: torch.Tensor) -> None:
            trained.append((xb.clone(), yb.clone()))

    model = new_mlp()
    fit(model, x[:200], y[:200], TrainConfig(epochs=1, batch_size=64, augment="shift"),
        hooks=Hooks(batch=edit, callbacks=[Seen()]))  # fmt: skip
    assert [len(b) for b in drawn] == [64, 64, 64, 8]
    assert torch.equal(torch.cat(drawn).sort().values, y[:200].sort().values)  # each image once, labels as stored
    assert all(bool((yb == 7).all()) for _, yb in trained)  # training sees the edited labels ...
    shifted = torch.cat([xb for xb, _ in trained])
    assert float(shifted.max()) == 1.0 and bool((shifted == 0).any())  # ... and the edit, then shifted


def test_train_like_passes_a_batch_edit_and_refuses_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    _, meta = load_checkpoint(Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn-digits.safetensors")
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 10
    calls: list[int] = []

    def edit(xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(xb.shape[0])
        return xb, yb

    train_like(replace(meta, recipe={**meta.recipe, "epochs": 1}), x, y, seed=0, batch=edit)
    assert sum(calls) == 40
    monkeypatch.setattr(Standard, "hooks", lambda self, cfg, shape: Hooks(batch=edit))
    with pytest.raises(ConfigError, match="edits the training batches itself"):
        train_like(meta, x, y, seed=0, batch=edit)
