"""The one training loop. Adversarial, poisoned or surrogate training are this loop with other hooks.

Hooks:
    batch: a per-batch data edit `(x, y, gen) -> (x, y)` on the batch as drawn, before augmentation:
        it may change images and labels (a training-control attack poisons every batch afresh, WaNet);
        `x_clean` below is its output, augmented.
    transform: a per-batch input transform `(model, x, y, gen, progress) -> x` (PGD for adversarial
        training, a trigger for poisoning), `progress` the fraction of training done, in [0, 1); it
        runs after augmentation and may switch the model's mode, which the loop puts back to train
        mode before the update.
    loss: `(model, x, y) -> scalar` (default: cross-entropy of the logits).
    pair_loss: `(model, x_clean, x, y, gen) -> scalar`, used instead of `loss` by objectives that need
        the clean batch beside the transformed one and a random draw (TRADES, GradAlign).
    callbacks: `Callback`s: `on_step_end(state, x, y)` after every optimiser step (`x` the clean,
        augmented batch just trained on, `state.step` already counting that step) and
        `on_epoch_end(state)` after every epoch's evaluation. Either may set `state.stop` or record
        `state.events` (a catastrophic-overfitting monitor, say); `state.x_val`/`state.y_val` are the
        held-out data `fit` evaluates on and `state.progress` the caller's progress listener. A stop
        set after a step ends the epoch there: the partial epoch is evaluated and recorded (its loss
        and accuracy over the batches it ran), and no `on_epoch_end` runs for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.errors import ConfigError
from bastion.core.ops import batch_slices
from bastion.core.progress import ProgressFn, report
from bastion.core.random import make_generator
from bastion.train.augment import Augment, augment_batch

__all__ = [
    "BatchFn",
    "Callback",
    "EpochRecord",
    "Hooks",
    "TrainConfig",
    "TrainHistory",
    "TrainState",
    "accuracy",
    "fit",
]

_LOSS_EVERY = 10  # steps between two reads of the running loss for the progress display

BatchFn = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]
InputTransform = Callable[[nn.Module, Tensor, Tensor, torch.Generator, float], Tensor]
LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
PairLossFn = Callable[[nn.Module, Tensor, Tensor, Tensor, torch.Generator], Tensor]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings (the recipe fills per-data-set defaults).

    Attributes:
        epochs: passes over the training split.
        batch_size: images per step.
        optimizer: `adam` or `sgd` (with Nesterov momentum).
        lr: the peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (decoupled for Adam: AdamW).
        schedule: `onecycle` (warm-up to `lr` over 25% of the steps, cosine to 0), `cosine` or `constant`.
        augment: `none`, `shift` (digits) or `crop-flip` (CIFAR-style).
        seed: seeds shuffling and augmentation (model initialisation is seeded by the caller).
        eval_batch_size: batch size of the per-epoch evaluation.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    augment: Augment = "none"
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, "a positive number"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("optimizer", self.optimizer in ("adam", "sgd"), "adam or sgd"),
            ("schedule", self.schedule in ("onecycle", "cosine", "constant"), "onecycle, cosine or constant"),
            ("augment", self.augment in ("none", "shift", "crop-flip"), "none, shift or crop-flip"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"training {name} must be {rule}; got {getattr(self, name)!r}")


class Callback:
    """A training callback: override the hooks you need; both do nothing by default."""

    def on_step_end(self, state: TrainState, x: Tensor, y: Tensor) -> None:
        """After the optimiser step on the clean batch `x` (N, C, H, W) with labels `y` (N,)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After the epoch's evaluation (`state.history[-1]` is its record)."""


@dataclass
class Hooks:
    transform: InputTransform | None = None
    loss: LossFn | None = None
    pair_loss: PairLossFn | None = None
    callbacks: Sequence[Callback] = ()
    batch: BatchFn | None = None

    def __post_init__(self) -> None:
        if self.loss is not None and self.pair_loss is not None:
            raise ConfigError("training hooks take a loss or a pair_loss, not both; drop one of them")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float | None
    seconds: float


@dataclass
class TrainState:
    """What callbacks see and may change."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0
    total_steps: int = 0
    x_val: Tensor | None = None
    y_val: Tensor | None = None
    progress: ProgressFn | None = None
    history: list[EpochRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stop: bool = False


@dataclass(frozen=True)
class TrainHistory:
    epochs: tuple[EpochRecord, ...]
    events: tuple[dict[str, Any], ...]
    seconds: float

    @property
    def final_test_accuracy(self) -> float | None:
        return self.epochs[-1].test_accuracy if self.epochs else None


@torch.inference_mode()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` on (x, y), in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: one sync, at the end
    with torch.no_grad():
        for s in batch_slices(x.shape[0], batch_size):
            correct += (model(x[s].to(device)).argmax(1) == y[s].to(device)).sum()
    model.train(was_training)
    return int(correct) / max(x.shape[0], 1)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


def _lr_factor(schedule: str, step: int, total: int) -> float:
    t = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    warm = 0.25
    return t / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


def fit(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    cfg: TrainConfig,
    *,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    hooks: Hooks | None = None,
    progress: ProgressFn | None = None,
) -> TrainHistory:
    """Train `model` in place on (x_train, y_train); evaluate on (x_test, y_test) after every epoch.

    Tensors move to the model's device once; shuffling and augmentation draw from a generator seeded
    with `cfg.seed`, so the same seed and the same initial weights give the same model.
    """
    hooks = hooks or Hooks()
    device = next(model.parameters()).device
    x_train, y_train = x_train.to(device), y_train.to(device)
    gen = make_generator(cfg.seed, device)
    optimizer = _optimizer(model, cfg)
    n = x_train.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    state = TrainState(
        model=model, optimizer=optimizer, total_steps=total, x_val=x_test, y_val=y_test, progress=progress
    )
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        state.epoch = epoch
        t0 = time.perf_counter()
        # running sums stay on the device: reading them every step would stall the GPU once per batch
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen, shown_loss = 0, None
        model.train()
        order = torch.randperm(n, generator=gen, device=device)
        for s in batch_slices(n, cfg.batch_size):
            idx = order[s]
            x_raw, y = x_train[idx], y_train[idx]
            if hooks.batch is not None:
                x_raw, y = hooks.batch(x_raw, y, gen)
            x_clean = augment_batch(x_raw, cfg.augment, gen)
            x = x_clean
            if hooks.transform is not None:
                x = hooks.transform(model, x_clean, y, gen, state.step / total).detach()
                model.train()
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg.schedule, state.step, total)
            if hooks.pair_loss is not None:
                loss = hooks.pair_loss(model, x_clean, x, y, gen)
            elif hooks.loss is not None:
                loss = hooks.loss(model, x, y)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                correct += (logits.argmax(1) == y).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.step += 1
            loss_sum += loss.detach().double() * y.shape[0]
            seen = s.stop
            if progress is not None:  # the running loss is read (a device sync) every few steps only
                if shown_loss is None or state.step % _LOSS_EVERY == 0 or seen == n:
                    shown_loss = float(loss_sum) / seen
                report(progress, "train", state.step, total, epoch=epoch, loss=shown_loss)
            for cb in hooks.callbacks:
                cb.on_step_end(state, x_clean, y)
            if state.stop:
                break
        test_acc = None
        if x_test is not None and y_test is not None:
            test_acc = accuracy(model, x_test, y_test, batch_size=cfg.eval_batch_size)
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(loss_sum) / seen,
            train_accuracy=int(correct) / seen if hooks.loss is None and hooks.pair_loss is None else math.nan,
            test_accuracy=test_acc,
            seconds=time.perf_counter() - t0,
        )
        state.history.append(record)
        report(progress, "epoch", epoch, cfg.epochs, test_accuracy=test_acc, train_loss=record.train_loss)
        if state.stop:  # set by a step callback: the epoch ended early
            break
        for cb in hooks.callbacks:
            cb.on_epoch_end(state)
        if state.stop:
            break
    optimizer.zero_grad(set_to_none=True)  # a trained model carries no stale gradients
    model.eval()
    return TrainHistory(tuple(state.history), tuple(state.events), time.perf_counter() - start)
