"""`bastion list`: what is registered, generated from the registries (and the built-in audit plans)."""

from __future__ import annotations

import inspect
from enum import StrEnum
from typing import Annotated

import typer

import bastion.attacks.evasion
import bastion.data
import bastion.defenses
import bastion.models  # noqa: F401  (importing the layers registers their entries)
from bastion.audit import builtin_plans, load_plan
from bastion.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS, RECIPES, Registry


class Kind(StrEnum):
    attacks = "attacks"
    defenses = "defenses"
    models = "models"
    datasets = "datasets"
    recipes = "recipes"
    plans = "plans"


_REGISTRIES: dict[Kind, Registry] = {
    Kind.attacks: ATTACKS,
    Kind.defenses: DEFENSES,
    Kind.models: MODELS,
    Kind.datasets: DATASETS,
    Kind.recipes: RECIPES,
}  # type: ignore[type-arg]


def _summary(kind: Kind, name: str, obj: object) -> str:
    """One line: a recipe's summary, a model or attack module's headline, or a loader's docstring headline."""
    if kind in (Kind.models, Kind.attacks, Kind.defenses):
        module = inspect.getmodule(obj)
        text = (module.__doc__ if module is not None else None) or ""
    else:
        text = getattr(obj, "summary", None) or inspect.getdoc(obj) or ""
    headline = " ".join(text.strip().split("\n\n")[0].split())  # the first paragraph, on one line
    return headline.removeprefix(f"`{name}`: ")


def list_(
    what: Annotated[
        Kind | None, typer.Argument(help="which registry to show (default: all)", show_default=False)
    ] = None,
) -> None:
    """List the attacks, defenses (output post-processors), models, data sets, training recipes and audit plans."""
    kinds = [what] if what is not None else list(Kind)
    for kind in kinds:
        typer.echo(kind.value)
        if kind is Kind.plans:
            rows = [(name, (plan := load_plan(name)).description, len(plan.scenarios)) for name in builtin_plans()]
            width = max(len(name) for name, _, _ in rows)
            for name, description, count in rows:
                typer.echo(f"  {name:<{width}}  {count} scenarios. {description}")
            continue
        reg = _REGISTRIES[kind]
        width = max(len(n) for n in reg.names())
        for family in reg.families():
            indent = "  "
            if family:  # grouped by family: the audit scenario kind that runs them
                typer.echo(f"  {family}")
                indent = "    "
            for name in reg.names(family):
                typer.echo(f"{indent}{name:<{width}}  {_summary(kind, name, reg.get(name))}")
