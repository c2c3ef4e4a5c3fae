"""The catastrophic-overfitting monitor: a training callback that watches PGD accuracy on held-out data.

Catastrophic overfitting (CO; Wong, Rice, Kolter, "Fast is better than free", arXiv 2001.03994,
section 5) is single-step adversarial training losing its robustness within a few hundred
iterations: PGD accuracy falls to about 0 while accuracy against the training attack (FGSM) jumps.
The reference (`locuslab/fast_adversarial`, `--early-stop`) checks PGD-5 on one batch after every
epoch and stops when robust accuracy falls by more than 0.2 from the previous check, keeping the
weights of that check. This callback generalises it to any recipe.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.evasion.pgd import PGD
from bastion.core.errors import ConfigError
from bastion.core.progress import report
from bastion.core.random import make_generator
from bastion.core.threat import ThreatModel
from bastion.core.victim import Victim
from bastion.train.loop import TrainState, accuracy

__all__ = ["CO_EVENT", "CatastrophicOverfittingMonitor", "find_collapse"]

logger = logging.getLogger(__name__)

CO_EVENT = "catastrophic-overfitting"


def find_collapse(
    pgd_accuracies: Sequence[float],
    clean_accuracies: Sequence[float] | None = None,
    *,
    drop: float = 0.2,
    floor: float = 0.02,
) -> int | None:
    """The first check at which PGD accuracy has collapsed; None when there is none.

    A check collapses when either
    - its PGD accuracy lies more than `drop` below the best earlier check (the reference's rule, a
      fall of more than 0.2 from the previous check, measured from the best one so that a fall spread
      over two checks counts too), or
    - its PGD accuracy is near zero (at most `floor`) and less than half the best earlier check's,
      while clean accuracy has not fallen below that check's (when clean accuracies are given):
      robustness vanishing while the model still learns, the signature of catastrophic overfitting
      in a model that never got far above chance robustness (measured on `mnist5k`: FGSM training
      at eps 0.3 goes 4% -> 7% -> 1% PGD accuracy while clean accuracy climbs 49% -> 82% -> 86%).
    """
    best, best_i = -1.0, -1
    for i, acc in enumerate(pgd_accuracies):
        if i > 0:
            clean_holds = clean_accuracies is None or clean_accuracies[i] >= clean_accuracies[best_i]
            if best - acc > drop or (acc <= floor < best / 2 and clean_holds):
                return i
        if acc > best:
            best, best_i = acc, i
    return None


@dataclass(kw_only=True)
class CatastrophicOverfittingMonitor:
    """After every epoch, PGD accuracy on a fixed held-out batch; on a collapse, restore and stop.

    Check: L-inf PGD with `steps` steps of `alpha` (default eps / 4, the reference's PGD-5 step) and
    `restarts` random starts, seeded with `seed` so every epoch meets the same attack, on `n` images
    of the loop's held-out split (`state.x_val`) drawn once by a generator seeded with `seed` (the
    reference uses a different training batch each epoch; a fixed held-out batch makes successive
    checks comparable). The model is attacked in eval mode (bastion's rule; the reference keeps
    train mode, which differs only for batch norm and dropout) and its mode is restored.

    Collapse (`find_collapse`): PGD accuracy more than `drop` (0.2, the reference's threshold) below
    the best earlier check, or down to `floor` (0.02) and under half the best while clean accuracy
    holds. Then the monitor logs a warning, sends a `co-monitor` progress event
    with `collapse=True`, restores the weights of the most robust check so far (the latest of equals;
    the reference, whose rule compares with the previous check only, restores that one), stops
    training (the reference's early stop) and appends to `state.events` (saved in the checkpoint's
    metadata):
    `{"event": "catastrophic-overfitting", "epoch", "step", "pgd_accuracy_before",
    "pgd_accuracy_after", "clean_accuracy_before", "clean_accuracy_after", "restored_epoch", "eps"}`,
    `before` being the restored check's numbers.

    Attributes:
        eps: the L-inf radius of the check (the training radius).
        alpha: PGD step; default eps / 4.
        steps, restarts: PGD iterations and random restarts.
        n: held-out images checked.
        drop: the fall in PGD accuracy (absolute, from the best check) that counts as a collapse.
        floor: PGD accuracy this low counts as a collapse when it is under half the best check's
            and clean accuracy holds.
        seed: seeds the choice of images and the PGD random starts.
        trace: the (epoch, clean accuracy, PGD accuracy) of every check so far.
    """

    eps: float
    alpha: float | None = None
    steps: int = 5
    restarts: int = 1
    n: int = 256
    drop: float = 0.2
    floor: float = 0.02
    seed: int = 0
    trace: list[tuple[int, float, float]] = field(default_factory=list)
    _good_state: dict[str, Tensor] | None = field(default=None, repr=False)
    _good_epoch: int = field(default=0, repr=False)
    _index: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ConfigError(f"co-monitor: eps must be > 0; got {self.eps!r}")
        if not 0 < self.drop < 1:
            raise ConfigError(f"co-monitor: drop must lie in (0, 1); got {self.drop!r}")
        if not 0 <= self.floor < 1:
            raise ConfigError(f"co-monitor: floor must lie in [0, 1); got {self.floor!r}")
        if self.steps < 1 or self.restarts < 1 or self.n < 1:
            raise ConfigError(
                f"co-monitor: steps, restarts and n must be >= 1; got {self.steps}, {self.restarts}, {self.n}"
            )

    def measure(self, state: TrainState) -> tuple[float, float]:
        """(clean accuracy, PGD accuracy) of `state.model` on the fixed held-out batch."""
        if state.x_val is None or state.y_val is None:
            raise ConfigError("the catastrophic-overfitting monitor needs held-out data: give fit() x_test and y_test")
        if self._index is None:
            gen = make_generator(self.seed, torch.device("cpu"))
            self._index = torch.randperm(state.x_val.shape[0], generator=gen)[: self.n]
        model = state.model
        device = next(model.parameters()).device
        x, y = state.x_val[self._index].to(device), state.y_val[self._index].to(device)
        was_training = model.training
        attack = PGD(
            threat=ThreatModel(norm="linf", eps=self.eps),
            steps=self.steps,
            alpha=self.alpha if self.alpha is not None else self.eps / 4,
            restarts=self.restarts,
            seed=self.seed,
        )
        result = attack.run(Victim(model, device=device), x, y)  # eval mode while attacking
        clean = accuracy(model, x, y)
        model.train(was_training)
        return clean, result.robust_accuracy

    def _best_robust(self) -> float:
        """The PGD accuracy of the check whose weights are kept."""
        return next(r for e, _, r in self.trace if e == self._good_epoch)

    def on_epoch_end(self, state: TrainState) -> None:
        clean, robust = self.measure(state)
        self.trace.append((state.epoch, clean, robust))
        at = find_collapse(
            [r for _, _, r in self.trace], [c for _, c, _ in self.trace], drop=self.drop, floor=self.floor
        )
        collapsed = at == len(self.trace) - 1
        report(state.progress, "co-monitor", state.epoch, state.epoch, clean=clean, pgd=robust, collapse=collapsed)
        if not collapsed:
            if self._good_state is None or robust >= self._best_robust():
                self._good_state = copy.deepcopy(state.model.state_dict())
                self._good_epoch = state.epoch
            return
        good = next(t for t in self.trace if t[0] == self._good_epoch)
        event: dict[str, Any] = {
            "event": CO_EVENT,
            "epoch": state.epoch,
            "step": state.step,
            "pgd_accuracy_before": good[2],
            "pgd_accuracy_after": robust,
            "clean_accuracy_before": good[1],
            "clean_accuracy_after": clean,
            "restored_epoch": self._good_epoch,
            "eps": self.eps,
        }
        assert self._good_state is not None  # a collapse needs an earlier check that passed
        state.model.load_state_dict(self._good_state)
        state.events.append(event)
        state.stop = True
        logger.warning(
            "catastrophic overfitting at epoch %d: PGD accuracy %.1f%% -> %.1f%% (clean %.1f%% -> %.1f%%); "
            "stopped and restored the weights of epoch %d",
            state.epoch,
            100 * good[2],
            100 * robust,
            100 * good[1],
            100 * clean,
            self._good_epoch,
        )
