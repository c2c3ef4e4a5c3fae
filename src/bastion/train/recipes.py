"""Training recipes: named bundles of default settings and loop hooks, registered in `RECIPES`.

A recipe knows its per-data-set defaults (what its paper or common practice uses) and the hooks it
adds to the loop. `standard` is plain empirical-risk minimisation; adversarial and noise-training
recipes register themselves from `bastion.defenses.training`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from bastion.core.params import params_dict, validate_params
from bastion.core.registry import RECIPES
from bastion.train.loop import Hooks, TrainConfig

__all__ = ["Recipe", "Standard", "default_config", "register_recipe"]

# Digit-sized grayscale data (mnist5k, digits): AdamW with a one-cycle schedule and 2-pixel shifts.
# `small_cnn` on mnist5k reaches 98% test accuracy in 12 epochs (~25 s on 2 CPU cores):
# benchmarks/train_mnist5k.py measures it.
SMALL_GRAYSCALE: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "augment": "shift",
}
# Colour images (CIFAR-style): SGD + Nesterov, weight decay 5e-4, batch 128, crop-and-flip.
COLOUR: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.1,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "augment": "crop-flip",
}


def default_config(input_shape: tuple[int, int, int], **overrides: Any) -> TrainConfig:
    """The base settings for data of this shape, with `overrides` (None values ignored) on top."""
    base = dict(SMALL_GRAYSCALE if input_shape[0] == 1 else COLOUR)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A training recipe: a frozen dataclass whose `param` fields are the recipe's own settings.

    Subclasses set `name` and `summary`, and override `defaults` (TrainConfig settings for data of
    a given shape) and `hooks` (what the recipe adds to the loop).
    """

    name: ClassVar[str] = "recipe"
    summary: ClassVar[str] = ""

    def __post_init__(self) -> None:
        validate_params(self)

    def defaults(self, input_shape: tuple[int, int, int]) -> dict[str, Any]:
        """Settings this recipe changes from the shape-based base for data of `input_shape`."""
        return {}

    def hooks(self, cfg: TrainConfig, input_shape: tuple[int, int, int]) -> Hooks:
        return Hooks()

    def config(self, input_shape: tuple[int, int, int], **overrides: Any) -> TrainConfig:
        merged = {**self.defaults(input_shape), **{k: v for k, v in overrides.items() if v is not None}}
        return default_config(input_shape, **merged)

    def params(self) -> dict[str, Any]:
        return params_dict(self)


def register_recipe(name: str) -> Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator: set `cls.name` and add the class to the `RECIPES` registry."""

    def add(cls: type[Recipe]) -> type[Recipe]:
        cls.name = name
        RECIPES.register(name)(cls)
        return cls

    return add


@register_recipe("standard")
@dataclass(frozen=True, kw_only=True)
class Standard(Recipe):
    """Plain training on clean data (empirical risk minimisation)."""

    summary: ClassVar[str] = "plain training on clean data"
