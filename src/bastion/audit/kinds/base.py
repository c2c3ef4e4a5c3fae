"""Scenario kinds: the one door through which a family of threats enters an audit.

A kind owns everything family-specific: the YAML fields of its scenarios (checked on load), what it
needs from the audit target, how a scenario runs, the result it stores (metrics, record, warnings,
images), its scorecard cards, its report section and therefore the metric names `bastion check`
accepts. The runner, the store and the report know kinds only through this interface.

A scenario's kind is never typed by the user: it follows from what the scenario runs. Each kind
names the YAML field that says it (`attack`, `detector`) and the registry that field looks names up
in; the registered name's family is the kind.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import did_you_mean
from bastion.core.progress import ProgressFn
from bastion.core.registry import RECIPES, Registry
from bastion.core.threat import Access
from bastion.report import Card, Section
from bastion.store import Artifact, ResultRow

__all__ = [
    "KINDS",
    "MethodParams",
    "Scenario",
    "ScenarioKind",
    "ScenarioResult",
    "clean_model_key",
    "method_params",
    "model_key",
    "presenters",
    "register_kind",
    "unknown_recipe",
]


@dataclass(frozen=True)
class Scenario:
    """One thing an audit does: a method of some kind, on `n` samples, with the kind's own settings.

    Attributes:
        key: the scenario's name in the store, the report and `bastion check`.
        kind: the scenario kind (the family of `method`).
        method: the registered attack or detector it runs.
        n: how many samples it uses (each kind says which).
        settings: the kind's own validated settings (a frozen dataclass).
    """

    key: str
    kind: str
    method: str
    n: int
    settings: Any

    def spec(self) -> dict[str, Any]:
        """The scenario as plain JSON types (stored with its result)."""
        field_name = KINDS.get(self.kind).method_field
        return {"key": self.key, "family": self.kind, field_name: self.method, "n": self.n, **asdict(self.settings)}


@dataclass(frozen=True)
class MethodParams:
    """The settings of a scenario whose method takes nothing but its own parameters (`params:`)."""

    params: dict[str, Any]


def method_params(entry: Entry, cls: type) -> list[tuple[str, MethodParams]]:
    """A kind's `settings` for such a scenario: the entry's `params`, checked by building the method once."""
    params = entry.params(cls)
    entry.construct(cls, **params)  # the method checks its own parameters
    return [("", MethodParams(params=params))]


def model_key(target: AuditTarget, scenario: Scenario, seed: int) -> str:
    """Names a model a scenario trains, for its checkpoint beside the run: the audited model, its data, the
    scenario (every setting) and the seed; `KEY-<16 hex digits>`."""
    key = {"model": target.model_sha256, "data": target.data, "spec": scenario.spec(), "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{scenario.key}-{digest}"


def unknown_recipe(name: str) -> str | None:
    """Why `name` is not a training recipe (`bastion list recipes`), or None when it is one."""
    known = RECIPES.names()
    if name in known:
        return None
    hint = did_you_mean(name, known) or f" The recipes are {', '.join(known)}."
    return f"unknown training recipe {name!r}.{hint}"


def clean_model_key(target: AuditTarget, recipe: str, seed: int) -> str:
    """Names a model trained with another `recipe` on the audited model's clean training set (an
    adversarially trained reference or surrogate): every scenario that needs it shares it."""
    key = {"model": target.model_sha256, "data": target.data, "recipe": recipe, "seed": seed, "n": target.n_members}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"clean-{recipe}-{digest}"


@dataclass(frozen=True)
class ScenarioResult:
    """What a scenario produced: headline metrics (stored, shown, bounded by `bastion check`), the full
    record (plain JSON), warnings, images, and its wall time."""

    metrics: dict[str, float | int | None]
    record: dict[str, Any]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)


class ScenarioKind(ABC):
    """Base of the scenario kinds; one instance of each is registered in `KINDS` under its `name`.

    Class attributes a kind sets:
        name: the kind, and the family of the methods it runs (`evasion`, `membership`, `ood`).
        method_field: the YAML field naming what a scenario runs.
        registry: where that name is looked up.
        fields: the kind's own YAML fields, besides `name`, `n` and `method_field`.
        title: the heading of its report section.
    """

    name: ClassVar[str]
    method_field: ClassVar[str]
    registry: ClassVar[Registry[Any]]
    fields: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str] = ""

    @abstractmethod
    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        """Validate a scenario's own fields; return one (key suffix, settings) per scenario it expands to
        (a list of radii gives one scenario per radius, keyed NAME@EPS)."""

    def default_name(self, method: str, settings: Any) -> str:
        """The scenario's key when the plan gives no `name`."""
        return method

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        """Raise `ConfigError` when the target cannot give what the scenario needs (the training
        images, a way to retrain the model, a second data set...). Called for every scenario before
        the audit runs anything. Most kinds need nothing beyond the model and its data."""
        return None

    def access(self, scenario: Scenario) -> Access:
        """What the scenario needs of the model: `white-box` (its weights, gradients or training: most kinds),
        or only the answers to queries, `scores` or `label`, so that it can audit a deployed model (an ONNX
        file, an HTTP endpoint) known by its answers alone."""
        return "white-box"

    @abstractmethod
    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        """Run one scenario on the target."""

    # --- presentation (the report's `Presenter`) ---------------------------------------------------
    @abstractmethod
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        """The kind's scorecard cards."""

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        """The data behind the kind's plots (plain JSON types)."""
        return {}

    @abstractmethod
    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        """The kind's section of the HTML report."""


KINDS: Registry[ScenarioKind] = Registry("scenario kind")


def register_kind(cls: type[ScenarioKind]) -> type[ScenarioKind]:
    """Class decorator: register one instance of the kind under its name."""
    KINDS.register(cls.name)(cls())
    return cls


def presenters() -> dict[str, ScenarioKind]:
    """Every kind by family: how the report presents each family (`bastion.report.Presenter`)."""
    return dict(KINDS.items())
