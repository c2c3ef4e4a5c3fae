"""Train a model on a data set with a recipe and save it as a checkpoint: what `bastion train` does."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from bastion.core.errors import ConfigError
from bastion.core.ops import resolve_device
from bastion.core.params import param_fields
from bastion.core.progress import ProgressFn
from bastion.core.random import seed_everything
from bastion.core.registry import RECIPES
from bastion.data import Dataset, load_dataset
from bastion.models import build_model
from bastion.models.checkpoint import CheckpointMeta, save_checkpoint
from bastion.models.external import ExternalModel, load_external
from bastion.train.loop import BatchFn, TrainConfig, TrainHistory, accuracy, fit
from bastion.train.recipes import Recipe

__all__ = ["TrainOutcome", "train_checkpoint", "train_like"]


class TrainOutcome:
    """The trained model, its saved metadata and the training history."""

    def __init__(self, model: nn.Module, meta: CheckpointMeta, history: TrainHistory, path: Path) -> None:
        self.model, self.meta, self.history, self.path = model, meta, history, path


def _build(model: str, ds: Dataset, model_kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    if ":" in model:  # a user's architecture, package.module:factory
        return load_external(model), {}
    c, h, _ = ds.input_shape
    kwargs = {
        "num_classes": ds.num_classes,
        "in_channels": c,
        "image_size": h,
        "mean": list(ds.mean),
        "std": list(ds.std),
        **model_kwargs,
    }
    return build_model(model, **kwargs), kwargs


def train_checkpoint(
    *,
    model: str,
    data: str,
    out: str | Path,
    recipe: str = "standard",
    seed: int = 0,
    split_seed: int = 0,
    data_root: str | Path | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
    train_n: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    recipe_params: dict[str, Any] | None = None,
    **overrides: Any,
) -> TrainOutcome:
    """Train architecture `model` on data set `data` with `recipe` and save the checkpoint to `out`.

    Args:
        model: a registered architecture name, or `package.module:factory` for a user's own.
        data: a data-set spec (`mnist5k`, `cifar10:/folder`, `npz:/file.npz`, ...).
        out: the checkpoint file to write (safetensors with JSON metadata).
        recipe: a registered training recipe.
        recipe_params: the recipe's own settings (e.g. `{"eps": 0.3}` for `pgd-at`).
        seed: seeds the initial weights, shuffling and augmentation.
        split_seed: seeds the data set's train/test split.
        train_n: train on the first `train_n` images of the training split only (recorded in the
            checkpoint, so that an audit knows which images are members of the training set).
        overrides: `TrainConfig` fields to change from the recipe's defaults (None: keep).
    """
    rec: Recipe = RECIPES.get(recipe)(**(recipe_params or {}))  # type: ignore[operator]
    ds = load_dataset(data, root=data_root, seed=split_seed)
    if train_n is not None and not 1 <= train_n <= ds.x_train.shape[0]:
        raise ConfigError(f"train_n must lie in [1, {ds.x_train.shape[0]}] for {data}; got {train_n}")
    x_train, y_train = ds.x_train[:train_n], ds.y_train[:train_n]
    dev = resolve_device(device)
    seed_everything(seed)
    net, arch_kwargs = _build(model, ds, dict(model_kwargs or {}))
    net.to(dev)
    cfg = rec.config(ds.input_shape, seed=seed, **overrides)
    history = fit(
        net,
        x_train,
        y_train,
        cfg,
        x_test=ds.x_test,
        y_test=ds.y_test,
        hooks=rec.hooks(cfg, ds.input_shape),
        progress=progress,
    )
    clean = accuracy(net, ds.x_test, ds.y_test)
    external = isinstance(net, ExternalModel)
    meta = CheckpointMeta(
        architecture="external" if external else model,
        arch_kwargs=arch_kwargs,
        factory=model if external else None,
        adapter=net.adapter_settings() if isinstance(net, ExternalModel) else {},
        dataset=data,
        split_seed=split_seed,
        train_n=train_n,
        num_classes=ds.num_classes,
        input_shape=ds.input_shape,
        mean=ds.mean,
        std=ds.std,
        recipe={
            "name": recipe,
            **rec.params(),
            **asdict(cfg),
            "seconds": round(history.seconds, 2),
            "device": str(dev),
        },
        clean_accuracy=clean,
        events=history.events,
    )
    path = save_checkpoint(out, net, meta)
    net.eval()
    return TrainOutcome(net, meta, history, path)


def train_like(
    meta: CheckpointMeta,
    x: Tensor,
    y: Tensor,
    *,
    seed: int,
    device: str | None = None,
    progress: ProgressFn | None = None,
    batch: BatchFn | None = None,
    recipe: dict[str, Any] | None = None,
) -> nn.Module:
    """A fresh model like the one `meta` describes (same architecture, recipe and optimisation settings),
    trained on (x, y) from new weights seeded by `seed`; returned in eval mode.

    Shadow models, retraining without suspect samples and poisoned training all go through here, so
    they train the way the audited model was trained. `batch` edits every batch before the recipe sees
    it (a training-control attack such as WaNet poisons each batch afresh; see `Hooks`). `recipe`
    (`{"name": "fgsm-rs", ...}`) trains the same architecture with another recipe instead, at that
    recipe's own defaults for the data's shape where it gives no setting (what an appropriator who
    trains adversarially does).
    """
    spec = meta.recipe if recipe is None else recipe
    rec_cls = RECIPES.get(spec.get("name", "standard"))
    own = {f.name for f, _, _ in param_fields(rec_cls)}
    rec: Recipe = rec_cls(**{k: v for k, v in spec.items() if k in own})  # type: ignore[operator]
    settings = {f.name for f in fields(TrainConfig)} - {"seed"}
    cfg = rec.config(meta.input_shape, seed=seed, **{k: v for k, v in spec.items() if k in settings})
    dev = resolve_device(device)
    seed_everything(seed)
    net = meta.build().to(dev)
    hooks = rec.hooks(cfg, meta.input_shape)
    if batch is not None:
        if hooks.batch is not None:
            raise ConfigError(f"recipe {rec.name!r} edits the training batches itself; it takes no second batch edit")
        hooks = replace(hooks, batch=batch)
    fit(net, x, y, cfg, hooks=hooks, progress=progress)
    return net.eval()
