"""The audit target: the model under audit and everything the scenario kinds may need from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from bastion.core.errors import ConfigError
from bastion.core.oracle import BlackBoxModel
from bastion.core.progress import ProgressFn
from bastion.core.random import seed_everything
from bastion.core.victim import Victim
from bastion.data import Dataset
from bastion.models import CheckpointMeta, load_checkpoint, save_checkpoint
from bastion.train import BatchFn

__all__ = ["AuditTarget", "Trainer"]

# Trains a fresh model like the audited one on (x, y) with a seed: same architecture, same recipe.
Trainer = Callable[..., nn.Module]


@dataclass(frozen=True)
class AuditTarget:
    """The model under audit and the data it is audited on.

    Attributes:
        victim: the model: a `Victim`, or a `BlackBoxModel` known by its answers alone (an ONNX file, an
            HTTP endpoint), which only black-box scenarios can audit (`white_box` is then False).
        dataset: the data set, split as the model's training split it (`split_seed`).
        data: the data-set spec as given (`mnist5k`, `cifar10:/data`, ...).
        split_seed: the seed of the train/test split.
        model_name: how the model is shown (checkpoint file name, or the factory).
        model_sha256: SHA-256 of the checkpoint (or weights) file: the model's identity in the store.
        model_meta: what the checkpoint says about the model (architecture, recipe, accuracy ...).
        train_n: the model trained on the first `train_n` images of the training split (None: all of it).
        members_assumed: True when nobody recorded what the model trained on (a user's own model): the
            training split is then assumed, and the membership scenarios say so.
        trainer: trains a fresh model with the model's own architecture and recipe,
            `trainer(x, y, seed=..., progress=...) -> nn.Module` (shadow models, retraining), and
            `batch=` a per-batch edit of the training data where one is given (`train_fresh`); None
            when the model cannot be rebuilt.
        ood_data: a second data set of the same image shape, used as one more OOD set.
        ood_name: its spec as given (`cifar100:/data`).
        model_dir: where the models an audit trains are kept as checkpoints (the runner sets it per run);
            None: they are not kept.
    """

    victim: Victim | BlackBoxModel
    dataset: Dataset
    data: str
    split_seed: int
    model_name: str
    model_sha256: str
    model_meta: dict[str, Any] = field(default_factory=dict)
    train_n: int | None = None
    members_assumed: bool = False
    trainer: Trainer | None = None
    ood_data: Dataset | None = None
    ood_name: str | None = None
    model_dir: Path | None = None

    @property
    def white_box(self) -> bool:
        """Whether the model itself is at hand (weights, gradients), not only its answers."""
        return isinstance(self.victim, Victim)

    def test(self, n: int) -> tuple[Tensor, Tensor]:
        """The first `n` test images and labels: images the model never saw (non-members)."""
        return self.dataset.x_test[:n], self.dataset.y_test[:n]

    def members(self, n: int) -> tuple[Tensor, Tensor]:
        """The first `n` training images the model was trained on, with their labels."""
        count = self.n_members
        return self.dataset.x_train[: min(n, count)], self.dataset.y_train[: min(n, count)]

    @property
    def n_members(self) -> int:
        total = self.dataset.x_train.shape[0]
        return total if self.train_n is None else min(self.train_n, total)

    def build_fresh(self, seed: int) -> nn.Module:
        """An untrained model of the audited model's architecture, initialised from `seed`, on its device:
        where a method that trains a model its own way starts (a data protection's surrogate)."""
        if self.trainer is None:
            raise ConfigError(f"{self.model_name} cannot be rebuilt: its architecture is unknown")
        seed_everything(seed)
        return CheckpointMeta.from_dict(self.model_meta, source=self.model_name).build().to(self.victim.device)

    def train_fresh(
        self,
        x: Tensor,
        y: Tensor,
        *,
        seed: int,
        progress: ProgressFn | None = None,
        cache_key: str | None = None,
        batch: BatchFn | None = None,
        recipe: dict[str, Any] | None = None,
    ) -> nn.Module:
        """A fresh model trained on (x, y) with the audited model's architecture and recipe, in eval mode.

        `batch` edits every training batch as it is drawn (`bastion.train.Hooks.batch`): how a
        training-control attack (WaNet) poisons training afresh each step. `recipe` (`{"name":
        "fgsm-rs"}`) trains with another recipe, at its own defaults, instead of the audited model's.

        With a `cache_key` and a `model_dir`, the model is kept there as `cache_key.safetensors` and read
        back instead of trained again (a resumed audit); the key must name everything that shapes it.
        """
        if self.trainer is None:
            raise ConfigError(f"{self.model_name} cannot be retrained: its architecture or recipe is unknown")
        path = None if cache_key is None or self.model_dir is None else self.model_dir / f"{cache_key}.safetensors"
        if path is not None and path.is_file():
            model, _ = load_checkpoint(path, device=self.victim.device)
            return model
        extra: dict[str, Any] = {} if batch is None else {"batch": batch}
        if recipe is not None:
            extra["recipe"] = recipe
        model = self.trainer(x, y, seed=seed, progress=progress, **extra)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(path, model, CheckpointMeta.from_dict(self.model_meta, source=self.model_name))
        return model
