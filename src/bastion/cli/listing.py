"""`bastion list`: what is registered, generated from the registries."""

from __future__ import annotations

import inspect
from enum import StrEnum
from typing import Annotated

import typer

import bastion.attacks.evasion
import bastion.data
import bastion.defenses.training
import bastion.models  # noqa: F401  (importing the layers registers their entries)
from bastion.core.registry import ATTACKS, DATASETS, MODELS, RECIPES, Registry


class Kind(StrEnum):
    attacks = "attacks"
    models = "models"
    datasets = "datasets"
    recipes = "recipes"


_REGISTRIES: dict[Kind, Registry] = {
    Kind.attacks: ATTACKS,
    Kind.models: MODELS,
    Kind.datasets: DATASETS,
    Kind.recipes: RECIPES,
}  # type: ignore[type-arg]


def _summary(kind: Kind, name: str, obj: object) -> str:
    """One line: a recipe's summary, a model or attack module's headline, or a loader's docstring headline."""
    if kind in (Kind.models, Kind.attacks):
        module = inspect.getmodule(obj)
        text = (module.__doc__ if module is not None else None) or ""
    else:
        text = getattr(obj, "summary", None) or inspect.getdoc(obj) or ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.removeprefix(f"`{name}`: ")


def list_(
    what: Annotated[
        Kind | None, typer.Argument(help="which registry to show (default: all)", show_default=False)
    ] = None,
) -> None:
    """List the registered models, data sets and training recipes."""
    kinds = [what] if what is not None else list(Kind)
    for kind in kinds:
        reg = _REGISTRIES[kind]
        typer.echo(kind.value)
        width = max(len(n) for n in reg.names())
        for name, obj in reg.items():
            typer.echo(f"  {name:<{width}}  {_summary(kind, name, obj)}")
