"""The poisoning contract. A `PoisoningAttack` edits a share of a training set (`poison`), the victim
trains on it as usual, and `evaluate` measures the model it got: clean accuracy, and the attack
success rate (ASR) of the trigger (`apply_trigger`) on test images of the other classes.

Inputs are images in [0, 1], NCHW; every trigger is applied there, before normalisation and before
training-time augmentation, and clipped to [0, 1]. The rate counts poisoned images over the whole
training set. The poisoned images are drawn, seeded and without replacement, from the classes other
than the target (all-to-one), so that every poisoned image teaches the backdoor; the toolbox
references draw from every class (`include_target_class=True` does so).

A training-control attack (WaNet's threat model: the attacker runs the training code) poisons no
image for good: `poison` hands training a per-batch edit instead (`Poisoned.batch`), which the
trainer applies to every batch it draws (`AuditTarget.train_fresh(..., batch=...)`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor

from bastion.attacks.base import Attack
from bastion.core.errors import ConfigError, DataError
from bastion.core.params import param
from bastion.core.random import make_generator
from bastion.core.results import PoisonResult
from bastion.core.threat import Access
from bastion.core.victim import Victim
from bastion.train import BatchFn

__all__ = ["Poisoned", "PoisoningAttack"]


@dataclass(frozen=True)
class Poisoned:
    """A poisoned training set: what the victim trains on.

    Attributes:
        x: the images (N, C, H, W).
        y: their labels (N,).
        index: the images poisoned for good, carrying the trigger and the backdoor's label (P,),
            ascending. Empty for a training-control attack: it leaves (x, y) as they were and poisons
            fresh images of every training batch through `batch` instead.
        cover: images edited but left with their true label (Q,), ascending: WaNet's noise samples;
            empty for most attacks.
        batch: the per-batch edit that training must apply (`bastion.train.Hooks.batch`): a
            training-control attack's poison; None for an attack that poisons the set itself.
    """

    x: Tensor
    y: Tensor
    index: Tensor
    cover: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    batch: BatchFn | None = None


@dataclass(frozen=True, kw_only=True)
class PoisoningAttack(Attack, ABC):
    """Base of the backdoor attacks (family `backdoor`): the attacker edits training images and their
    labels; the victim trains normally and keeps a hidden rule, "trigger present -> target class".

    `mode="all-to-one"` sends every triggered image to `target`; `all-to-all` sends class y to
    (y + 1) mod K (BadNets' second setting).
    """

    family: ClassVar[str] = "backdoor"
    access: ClassVar[Access] = "training-data"

    rate: float = param(0.1, gt=0, lt=1, help="poisoned images over the whole training set")
    target: int = param(0, ge=0, help="the class triggered images go to (all-to-one)")
    mode: Literal["all-to-one", "all-to-all"] = param("all-to-one", help="all-to-one, or class y -> y + 1")
    include_target_class: bool = param(False, help="draw poisoned images from the target class too (all-to-one)")

    @property
    def poisons_the_set(self) -> bool:
        """Whether `poison` leaves poisoned images in the training set (what a training-set inspector
        looks for); False for a training-control attack, which poisons each batch as it is drawn."""
        return True

    @property
    def crafting_recipe(self) -> str | None:
        """The training recipe of the robust model this attack crafts its poisons on (`poison`'s
        `surrogate`, which an audit trains on the clean set), or None when it needs none."""
        return None

    @abstractmethod
    def apply_trigger(self, x: Tensor) -> Tensor:
        """The triggered images (N, C, H, W) in [0, 1], as shown to the model at test time."""

    def _poison_images(self, x: Tensor) -> Tensor:
        """The images as poisoned for training; the test-time trigger unless the method trains another."""
        return self.apply_trigger(x)

    def target_labels(self, y: Tensor, num_classes: int) -> Tensor:
        """Where the backdoor sends images of true class `y` (N,)."""
        if self.mode == "all-to-all":
            return (y + 1) % num_classes
        return torch.full_like(y, self.target)

    def _check(self, y: Tensor, num_classes: int) -> None:
        if self.target >= num_classes:
            raise ConfigError(f"{self.name}: target must be a class below {num_classes}; got {self.target}")
        if y.ndim != 1 or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes)):
            raise DataError(f"labels must be (N,) classes in [0, {num_classes})")

    def poison(self, x: Tensor, y: Tensor, num_classes: int, *, surrogate: Victim | None = None) -> Poisoned:
        """Poison round(rate * N) images of the training set (x, y), seeded by the attack's seed.
        `surrogate`: the robust model of `crafting_recipe`, for an attack that has one."""
        self._check(y, num_classes)
        pool = torch.arange(y.numel())
        if self.mode == "all-to-one" and not self.include_target_class:
            pool = pool[y != self.target]
        count = round(self.rate * y.numel())
        if count < 1 or count > pool.numel():
            raise DataError(
                f"{self.name}: rate {self.rate} of {y.numel()} images asks for {count} poisoned images; "
                f"{pool.numel()} can be poisoned"
            )
        index = pool[torch.randperm(pool.numel(), generator=make_generator(self.seed))[:count]].sort().values
        x_p, y_p = x.clone(), y.clone()
        x_p[index] = self._poison_images(x[index]).clamp(0, 1)
        y_p[index] = self.target_labels(y[index], num_classes)
        return Poisoned(x_p, y_p, index)

    def screening_sets(self, victim: Victim, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """What a run-time trigger detector is measured on (BaDExpert's protocol, Xie et al., ICLR 2024):
        the clean test images the model gets right (negatives) and the triggered test images of the
        other classes that the model sends where the backdoor says (positives, the attacks that work)."""
        num_classes = victim.num_classes
        self._check(y, num_classes)
        x_cpu = x.cpu()
        clean = x_cpu[victim.predict(x).cpu() == y.cpu()]
        goal = self.target_labels(y.cpu(), num_classes)
        movable = goal != y.cpu()
        triggered = self.apply_trigger(x_cpu[movable]).clamp(0, 1)
        return clean, triggered[victim.predict(triggered).cpu() == goal[movable]]

    def evaluate(self, victim: Victim, x: Tensor, y: Tensor, poisoned: Poisoned, *, seconds: float) -> PoisonResult:
        """Clean accuracy on the test images (x, y) and the trigger's success on those it can move.

        ASR counts the test images whose true class is not where the backdoor sends them (all-to-one:
        not the target) and that the triggered model classifies as the backdoor's label once triggered;
        `asr_over_correct` only over those the model gets right when clean. `seconds` is the time spent
        poisoning and training, recorded in the result.
        """
        victim.check_input(x)
        num_classes = victim.num_classes
        self._check(y, num_classes)
        start = time.perf_counter()
        pred = victim.predict(x).cpu()
        goal = self.target_labels(y, num_classes)
        movable = goal != y
        if not bool(movable.any()):
            raise DataError("no test image can show the backdoor: every one is of the target class")
        triggered = self.apply_trigger(x[movable]).clamp(0, 1)
        pred_t = victim.predict(triggered).cpu()
        return PoisonResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            num_classes=num_classes,
            poisoned_index=poisoned.index.cpu(),
            n_train=int(poisoned.y.numel()),
            y=y.cpu(),
            pred=pred,
            movable=movable,
            pred_triggered=pred_t,
            goal=goal[movable],
            seconds=seconds + time.perf_counter() - start,
        )
