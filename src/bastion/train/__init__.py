"""bastion.train: the one training loop with hooks, recipes, and `train_checkpoint` (what `bastion train` does)."""

from bastion.train.loop import (
    BatchFn,
    Callback,
    EpochRecord,
    Hooks,
    TrainConfig,
    TrainHistory,
    TrainState,
    accuracy,
    fit,
)
from bastion.train.recipes import Recipe, default_config, register_recipe
from bastion.train.run import TrainOutcome, train_checkpoint, train_like

__all__ = [
    "BatchFn",
    "Callback",
    "EpochRecord",
    "Hooks",
    "Recipe",
    "TrainConfig",
    "TrainHistory",
    "TrainOutcome",
    "TrainState",
    "accuracy",
    "default_config",
    "fit",
    "register_recipe",
    "train_checkpoint",
    "train_like",
]
