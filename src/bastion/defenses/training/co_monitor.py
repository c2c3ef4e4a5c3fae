"""The catastrophic-overfitting monitor: PGD accuracy on the current training batch every few steps.

Catastrophic overfitting (CO; Wong, Rice, Kolter, "Fast is better than free", ICLR 2020, arXiv
2001.03994, section 5) is single-step adversarial training losing its robustness within a few hundred
iterations: PGD accuracy falls to about 0 while accuracy against the training attack (FGSM) jumps.
The reference's early stop (`locuslab/fast_adversarial`, `CIFAR10/train_fgsm.py --early-stop`) runs,
after each epoch, PGD-5 (step 2/255 = eps / 4, one random start: `CIFAR10/utils.py`, `attack_pgd`)
on the first training batch of that epoch, the model left in train mode; when the batch's PGD
accuracy is more than 0.2 below the previous check's, training stops and the weights saved at the
previous check are kept. This callback does the same every `every` optimiser steps, on the batch
just trained on (docs/defenses.md, "The catastrophic-overfitting monitor").
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.errors import ConfigError
from bastion.core.progress import report
from bastion.core.random import make_generator
from bastion.train.loop import Callback, TrainState

__all__ = ["CO_EVENT", "DEFAULT_EVERY", "CatastrophicOverfittingMonitor", "Check", "find_collapse"]

logger = logging.getLogger(__name__)

CO_EVENT = "catastrophic-overfitting"

# Checks every 50 optimiser steps. CO unfolds within a few hundred iterations, "within the span of a
# couple epochs" (Wong et al., section 5; the reference's README), while the reference's once-an-epoch
# check is 390 iterations apart on CIFAR-10 at batch 128, so a collapse early in an epoch trains on for
# hundreds of steps before it is seen. A check costs about three FGSM-RS steps (PGD-5: five
# forward-backward passes and two forward ones; an FGSM-RS step: two of each), so 50 keeps the monitor
# near 6% of training time. More frequent checks of one batch each fire on batch-to-batch noise more
# often (measured in docs/defenses.md, "The catastrophic-overfitting monitor").
DEFAULT_EVERY = 50


class Check(NamedTuple):
    """One check: where it ran and the batch's clean and PGD accuracy (train mode)."""

    epoch: int
    step: int
    clean: float
    pgd: float


def find_collapse(pgd_accuracies: Sequence[float], *, drop: float = 0.2) -> int | None:
    """The first check whose PGD accuracy lies more than `drop` below the previous check's; None if none.

    The reference's rule (`robust_acc - prev_robust_acc < -0.2`, `CIFAR10/train_fgsm.py`), the first
    check compared with 0, so it never collapses. The monitor stops at the first collapse, so the
    previous check is the last that passed.
    """
    previous = 0.0
    for i, acc in enumerate(pgd_accuracies):
        if acc - previous < -drop:
            return i
        previous = acc
    return None


def pgd_correct(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, gen: torch.Generator
) -> Tensor:
    """Per image, whether `model` still classifies `x + delta` correctly after L-inf PGD; (N,) bool.

    Runs in the model's current mode (the monitor's train mode: batch-norm layers normalise by the
    batch). `delta` starts uniform in the eps-ball (drawn from `gen`), clipped so `x + delta` lies in
    [0, 1]; each of `steps` steps adds `alpha * sign(grad CE)` to the images still classified
    correctly and projects back to the ball and [0, 1]; images already misclassified stop moving
    (as the reference's `attack_pgd` does). Only the input's gradient is taken.
    """
    delta = (2 * torch.rand(x.shape, generator=gen, device=gen.device).to(x.device) - 1) * eps  # (N, C, H, W)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            logits = model(x + delta)  # (N, K)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), delta)
        active = (logits.argmax(1) == y).view(-1, *([1] * (x.dim() - 1)))  # (N, 1, 1, 1)
        if not bool(active.any()):
            delta = delta.detach()
            break
        step = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        step = (x + step).clamp(0, 1) - x
        delta = torch.where(active, step, delta.detach())
    with torch.no_grad():
        return model(x + delta).argmax(1) == y


@dataclass(kw_only=True)
class CatastrophicOverfittingMonitor(Callback):
    """Every `every` steps, PGD accuracy on the batch just trained on; on a collapse, restore and stop.

    Check (after optimiser steps `every`, `2 every`, ... and after the last step of training, so the
    weights training ends with are checked too): L-inf PGD with `steps` steps of `alpha` (default
    eps / 4, the reference's 2/255 at 8/255) from one uniform random start drawn by a generator
    seeded with `seed` afresh at every check (the same weights and batch give the same number), on
    the clean batch the step trained on (or, when that is an epoch's smaller last batch, on the full
    batch before it: the reference's check batch is always a full one), with the model in train mode
    as in the reference. The check leaves training as it found it: the model's mode, its buffers
    (batch-norm running statistics, which train-mode forward passes would move) and the global
    random state (dropout) are put back, and no parameter gradient is taken.

    Collapse (`find_collapse`): PGD accuracy more than `drop` (0.2, the reference's threshold) below
    the previous check's. Then the monitor logs a warning, sends a `co-monitor` progress event with
    `collapse=True`, restores the weights (the whole `state_dict`) of the last check that passed,
    stops training (the loop records the partial epoch) and appends to `state.events` (saved in the
    checkpoint's metadata):
    `{"event": "catastrophic-overfitting", "epoch", "step", "pgd_accuracy_before",
    "pgd_accuracy_after", "clean_accuracy_before", "clean_accuracy_after", "restored_epoch",
    "restored_step", "batch_size", "eps"}`, `before` being the restored check's numbers.

    Attributes:
        eps: the L-inf radius of the check (the training radius).
        alpha: PGD step; default eps / 4.
        steps: PGD iterations.
        every: optimiser steps between checks (`DEFAULT_EVERY`, 50).
        drop: the fall in PGD accuracy (absolute, from the previous check) that counts as a collapse.
        seed: seeds the PGD random start.
        trace: every check so far.
    """

    eps: float
    alpha: float | None = None
    steps: int = 5
    every: int = DEFAULT_EVERY
    drop: float = 0.2
    seed: int = 0
    trace: list[Check] = field(default_factory=list)
    _good_state: dict[str, Tensor] | None = field(default=None, repr=False)
    _batch: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ConfigError(f"co-monitor: eps must be > 0; got {self.eps!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ConfigError(f"co-monitor: alpha must be > 0; got {self.alpha!r}")
        if not 0 < self.drop < 1:
            raise ConfigError(f"co-monitor: drop must lie in (0, 1); got {self.drop!r}")
        if self.steps < 1 or self.every < 1:
            raise ConfigError(f"co-monitor: steps and every must be >= 1; got {self.steps}, {self.every}")

    def measure(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
        """(clean accuracy, PGD accuracy) of `model` on the batch (x, y), in train mode.

        The model's mode, buffers and the global random state are restored afterwards.
        """
        device = next(model.parameters()).device
        x, y = x.to(device), y.to(device)
        was_training = model.training
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            model.train()
            with torch.no_grad():
                clean = float((model(x).argmax(1) == y).float().mean())
            alpha = self.alpha if self.alpha is not None else self.eps / 4
            gen = make_generator(self.seed, x.device)
            robust = float(
                pgd_correct(model, x, y, eps=self.eps, alpha=alpha, steps=self.steps, gen=gen).float().mean()
            )
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(was_training)
        return clean, robust

    def on_step_end(self, state: TrainState, x: Tensor, y: Tensor) -> None:
        if self._batch is None or y.shape[0] >= self._batch[1].shape[0]:
            self._batch = (x, y)  # the last full batch: an epoch's remainder would make a noisier check
        if state.step % self.every != 0 and state.step != state.total_steps:
            return
        x, y = self._batch
        clean, robust = self.measure(state.model, x, y)
        self.trace.append(Check(state.epoch, state.step, clean, robust))
        collapsed = find_collapse([c.pgd for c in self.trace], drop=self.drop) == len(self.trace) - 1
        report(
            state.progress, "co-monitor", state.step, state.total_steps,
            epoch=state.epoch, clean=clean, pgd=robust, collapse=collapsed,
        )  # fmt: skip
        if not collapsed:
            self._good_state = copy.deepcopy(state.model.state_dict())
            return
        good = self.trace[-2]  # the first check never collapses
        event: dict[str, Any] = {
            "event": CO_EVENT,
            "epoch": state.epoch,
            "step": state.step,
            "pgd_accuracy_before": good.pgd,
            "pgd_accuracy_after": robust,
            "clean_accuracy_before": good.clean,
            "clean_accuracy_after": clean,
            "restored_epoch": good.epoch,
            "restored_step": good.step,
            "batch_size": int(y.shape[0]),
            "eps": self.eps,
        }
        assert self._good_state is not None  # a collapse needs an earlier check that passed
        state.model.load_state_dict(self._good_state)
        state.events.append(event)
        state.stop = True
        logger.warning(
            "catastrophic overfitting at step %d (epoch %d): training-batch PGD accuracy %.1f%% -> %.1f%% "
            "(clean %.1f%% -> %.1f%%); stopped and restored the weights of step %d",
            state.step,
            state.epoch,
            100 * good.pgd,
            100 * robust,
            100 * good.clean,
            100 * clean,
            good.step,
        )
