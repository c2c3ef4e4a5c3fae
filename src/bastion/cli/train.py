"""`bastion train`: train an architecture on a data set with a recipe and save a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import bastion.defenses  # noqa: F401  (registers the adversarial-training recipes)
from bastion.cli._common import DataRootOpt, DeviceOpt, QuietOpt, console, out, progress_bar
from bastion.core.params import parse_params
from bastion.core.registry import RECIPES
from bastion.train import train_checkpoint


def train(
    params: Annotated[
        list[str] | None,
        typer.Argument(
            help=(
                "the recipe's own settings as key=value, e.g. eps=0.3; fgsm-rs and gradalign also take the "
                "catastrophic-overfitting monitor's co_monitor=true|false, co_every=50 (steps between its "
                "PGD-5 checks of the training batch) and co_drop=0.2 (docs/defenses.md)"
            ),
            show_default=False,
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="architecture (`bastion list models`) or package.module:factory")] = (
        "small_cnn"
    ),
    data: Annotated[str, typer.Option("--data", "-d", help="data set (`bastion list datasets`)")] = "mnist5k",
    recipe: Annotated[str, typer.Option(help="training recipe (`bastion list recipes`)")] = "standard",
    epochs: Annotated[int | None, typer.Option(help="epochs (default: the recipe's)", show_default=False)] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="batch size (default: the recipe's)", show_default=False)
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="peak learning rate (default: the recipe's)", show_default=False)
    ] = None,
    augment: Annotated[
        str | None, typer.Option(help="none, shift or crop-flip (default: the recipe's)", show_default=False)
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="weight decay (default: the recipe's)", show_default=False)
    ] = None,
    train_n: Annotated[
        int | None,
        typer.Option(help="train on the first N training images only (default: all)", show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds weights, shuffling and augmentation")] = 0,
    split_seed: Annotated[int, typer.Option(help="seeds the data set's train/test split")] = 0,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="checkpoint to write (default checkpoints/MODEL-DATA-RECIPE.safetensors)"),
    ] = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Train a model and save it as a checkpoint (safetensors weights + JSON metadata)."""
    recipe_params = parse_params(RECIPES.get(recipe), params or [])  # type: ignore[arg-type]
    if out_path is None:
        stem = f"{model.replace(':', '.')}-{data.split(':')[0]}-{recipe}"
        out_path = Path("checkpoints") / f"{stem}.safetensors"
    with progress_bar(f"{model} on {data}", quiet=quiet) as progress:
        result = train_checkpoint(
            model=model,
            data=data,
            out=out_path,
            recipe=recipe,
            recipe_params=recipe_params,
            seed=seed,
            split_seed=split_seed,
            data_root=data_root,
            device=device,
            progress=progress,
            train_n=train_n,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            augment=augment,
            weight_decay=weight_decay,
        )
    h = result.history
    if not quiet:
        for e in h.epochs:
            acc = "" if e.test_accuracy is None else f"  test accuracy {e.test_accuracy:.2%}"
            console.print(f"  epoch {e.epoch:>3}  loss {e.train_loss:.4f}{acc}  {e.seconds:.1f} s", highlight=False)
    for event in h.events:
        if event.get("event") == "catastrophic-overfitting":
            console.print(
                f"  warning: catastrophic overfitting at step {event['step']} (epoch {event['epoch']}): "
                f"training-batch PGD accuracy {event['pgd_accuracy_before']:.1%} -> {event['pgd_accuracy_after']:.1%}; "
                f"training stopped and the weights of step {event['restored_step']} restored",
                highlight=False,
            )
    acc = result.meta.clean_accuracy
    out.print(
        f"{model} on {data} ({recipe}): test accuracy {acc:.2%} after {len(h.epochs)} epochs in {h.seconds:.1f} s"
        f" -> {result.path}",
        highlight=False,
    )
