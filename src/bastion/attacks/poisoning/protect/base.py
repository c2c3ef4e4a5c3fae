"""The data-protection contract (unlearnable examples). The data owner perturbs training images, labels
kept, so that whoever trains on them without permission gets a poor model; the measure is the clean
test accuracy of a model trained from scratch on the protected set (lower is better), beside the same
training on the clean set, with and without adversarial training, and the perturbation's size in its
own norm.

Inputs are images in [0, 1], NCHW; every perturbation is applied there, before normalisation and before
training-time augmentation, and clipped to [0, 1]. `protect(x, y, num_classes)` returns the protected
set; a method that crafts against a model trains its own from `build` (a fresh model of the
appropriator's presumed architecture), never the model under audit.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.core.errors import ConfigError, DataError
from bastion.core.params import param
from bastion.core.progress import ProgressFn
from bastion.core.random import make_generator
from bastion.core.threat import Access

__all__ = ["DataProtection", "ModelFactory", "Protected", "linf_radius", "perturbation_size"]

# A fresh, untrained model of the presumed appropriator's architecture (normalisation inside), seeded.
ModelFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class Protected:
    """A protected training set.

    Attributes:
        x: the images (N, C, H, W), the protected ones changed, the others as given.
        index: the images protected (P,), ascending.
        seconds: wall time of crafting.
        extra: method-specific records (plain JSON types).
    """

    x: Tensor
    index: Tensor
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def perturbation_size(x: Tensor, x_protected: Tensor) -> dict[str, float | int]:
    """`linf` (largest), `l2` (mean over the changed images) and `l0_pixels` (most pixel positions
    changed in one image, channels counted once) of `x_protected - x`, both (N, C, H, W)."""
    delta = (x_protected - x).double()
    changed = delta.flatten(1).abs().amax(dim=1) > 0
    if not bool(changed.any()):
        return {"linf": 0.0, "l2": 0.0, "l0_pixels": 0}
    d = delta[changed]
    return {
        "linf": float(d.abs().amax()),
        "l2": float(d.flatten(1).norm(dim=1).mean()),
        "l0_pixels": int((d.abs().amax(dim=1) > 0).flatten(1).sum(dim=1).max()),
    }


@dataclass(frozen=True, kw_only=True)
class DataProtection(Attack, ABC):
    """Base of the data protections (family `protection`): perturb the training images the owner
    publishes, labels kept, so that a model trained on them learns the perturbation, not the task.

    `fraction` protects a seeded share of the images (1: all of them, the papers' default setting).
    Class attributes: `norm` (what the method bounds: `linf` or `l0`), `needs_model` (crafting trains
    a model from the factory given to `protect`).
    """

    family: ClassVar[str] = "protection"
    access: ClassVar[Access] = "training-data"
    norm: ClassVar[str] = "linf"
    needs_model: ClassVar[bool] = False

    fraction: float = param(1.0, gt=0, le=1, help="share of the training images protected")

    @abstractmethod
    def _protect(
        self,
        x: Tensor,
        y: Tensor,
        num_classes: int,
        gen: torch.Generator,
        build: ModelFactory | None,
        progress: ProgressFn | None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """The protected images (N, C, H, W) of the images to protect (x, y), and method records."""

    def protect(
        self,
        x: Tensor,
        y: Tensor,
        num_classes: int,
        *,
        build: ModelFactory | None = None,
        progress: ProgressFn | None = None,
    ) -> Protected:
        """Protect round(fraction * N) images of the training set (x, y), drawn with the seed."""
        if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"{self.name}: expected images (N, C, H, W) and labels (N,); got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise DataError(f"{self.name}: labels must lie in [0, {num_classes})")
        if self.needs_model and build is None:
            raise ConfigError(f"{self.name} crafts against a model it trains: give `build`, a fresh-model factory")
        start = time.perf_counter()
        gen = make_generator(self.seed)
        count = round(self.fraction * y.numel())
        if count < 1:
            raise DataError(f"{self.name}: fraction {self.fraction} of {y.numel()} images protects none")
        if count == y.numel():
            index = torch.arange(count)
        else:
            index = torch.randperm(y.numel(), generator=gen)[:count].sort().values
        x = x.detach()
        x_p = x.clone()
        changed, extra = self._protect(x[index], y[index], num_classes, gen, build, progress)
        x_p[index] = changed.to(x_p).clamp(0, 1)
        return Protected(x_p, index, time.perf_counter() - start, extra)


def linf_radius(eps: float | None, input_shape: tuple[int, ...], *, grayscale: float, colour: float) -> float:
    """`eps` if given, else the method's default for digit-like (one channel) or colour images."""
    if eps is not None:
        return eps
    return grayscale if input_shape[0] == 1 else colour
