"""Audit plans: YAML files listing scenarios, validated on load with errors that name the line and field.

A plan:

    name: standard
    description: one line
    n: 500                 # samples per scenario unless a scenario says otherwise
    seed: 0
    scenarios:
      - attack: pgd        # an evasion attack: an `evasion` scenario
        eps: 0.3
      - attack: loss-threshold   # a membership-inference attack: a `membership` scenario
      - detector: energy   # an OOD detector: an `ood` scenario

Each scenario names what it runs (`attack: NAME` or `detector: NAME`); the registered name's family
is the scenario's kind, which owns the rest of its fields (see `bastion.audit.kinds` and
docs/audits.md). `name` (the scenario's key) and `n` are common to every kind. The built-in plans
(`quick`, `standard`, `full`) ship in `bastion/audit/plans/`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bastion.audit.kinds import KINDS, Scenario, ScenarioKind
from bastion.audit.schema import Entry, load_yaml, scenario_entries
from bastion.core.errors import ConfigError, did_you_mean

__all__ = ["Plan", "builtin_plans", "load_plan", "parse_plan"]

_PLAN_FIELDS = ("name", "description", "n", "seed", "scenarios")
_COMMON_FIELDS = ("name", "n")


@dataclass(frozen=True)
class Plan:
    """A validated plan: its name, source text (hashed into the run's provenance) and scenarios."""

    name: str
    description: str
    seed: int
    scenarios: tuple[Scenario, ...]
    text: str = field(repr=False)
    source: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def n_max(self) -> int:
        return max((s.n for s in self.scenarios), default=0)


def builtin_plans() -> list[str]:
    """The names of the plans that ship with bastion."""
    folder = resources.files("bastion.audit") / "plans"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_plan(spec: str | Path) -> Plan:
    """A built-in plan by name (`quick`, `standard`, `full`) or a YAML file by path."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"plan file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read plan file {str(path)!r}: {e}") from None
        return parse_plan(text, source=str(path))
    names = builtin_plans()
    if str(spec) not in names:
        raise ConfigError(
            f"unknown plan {str(spec)!r}.{did_you_mean(str(spec), names)} Built-in plans: {', '.join(names)}; "
            "or give the path of a .yaml file"
        )
    text = (resources.files("bastion.audit") / "plans" / f"{spec}.yaml").read_text(encoding="utf-8")
    return parse_plan(text, source=f"{spec}.yaml")


def parse_plan(text: str, *, source: str = "<plan>") -> Plan:
    """Validate plan text; every error names the source, the line and the field."""
    doc = load_yaml(text, source)
    doc.only(_PLAN_FIELDS)
    name = doc.get("name", str, Path(source).stem)
    description = doc.get("description", str, "")
    n_default = doc.positive_int("n", 500)
    seed = doc.get("seed", int, 0)
    scenarios: list[Scenario] = []
    for entry in scenario_entries(doc):
        for sc in _scenarios(entry, n_default):
            if any(sc.key == other.key for other in scenarios):
                raise entry.error(None, f"scenario key {sc.key!r} is used twice; give one of them another `name`")
            scenarios.append(sc)
    return Plan(name=name, description=description, seed=seed, scenarios=tuple(scenarios), text=text, source=source)


def _kind_of(entry: Entry) -> tuple[ScenarioKind, str]:
    """The kind of a scenario and the method it runs, from the field that names it."""
    kinds = [KINDS.get(k) for k in KINDS.names()]
    fields = list(dict.fromkeys(k.method_field for k in kinds))
    given = [f for f in fields if f in entry]
    if "family" in entry:
        raise entry.error("family", "`family` is not a field: a scenario's family is that of what it runs; remove it")
    if len(given) != 1:
        names = " or ".join(f"`{f}`" for f in fields)
        what = f"both {' and '.join(given)}" if given else "none"
        raise entry.error(None, f"{entry.what} must name what it runs with one of {names}; it has {what}")
    field_name = given[0]
    method = entry.raw(field_name)
    candidates = [k for k in kinds if k.method_field == field_name]
    registry = candidates[0].registry
    known = sorted({n for k in candidates for n in registry.names(k.name)})
    what = "attack" if field_name == "attack" else field_name
    if not isinstance(method, str) or method not in known:
        hint = ""
        if isinstance(method, str) and method in registry:
            hint = f" ({method!r} is in the {registry.family(method)} family, which no scenario kind runs)"
        raise entry.error(
            field_name,
            f"unknown {what} {method!r}{hint}.{did_you_mean(str(method), known)} Known: {', '.join(known)}",
        )
    family = registry.family(method)
    return next(k for k in candidates if k.name == family), method


def _scenarios(entry: Entry, n_default: int) -> list[Scenario]:
    kind, method = _kind_of(entry)
    entry.only((kind.method_field, *_COMMON_FIELDS, *kind.fields))
    n = entry.positive_int("n", n_default)
    expanded = kind.settings(entry, method)
    out = []
    for suffix, settings in expanded:
        name = entry.get("name", str, None) or kind.default_name(method, settings)
        out.append(Scenario(key=name + suffix, kind=kind.name, method=method, n=n, settings=settings))
    return out
