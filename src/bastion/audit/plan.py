"""Audit plans: YAML files listing scenarios, validated on load with errors that name the line and field.

A plan:

    name: quick
    description: one line
    n: 500                 # samples per scenario unless a scenario says otherwise
    seed: 0
    scenarios:
      - attack: pgd        # a registered attack (`bastion list attacks`)
        name: pgd          # the scenario's key in the store, reports and `bastion check` (default: the attack)
        norm: linf         # linf | l2
        eps: 0.3           # a number, "8/255", or a list: one scenario per radius, keyed NAME@EPS
        params: {steps: 40}
        n: 500
        targeted: false
        max_queries: 1000  # per-sample budget of a black-box attack
        checks: true       # gradient-masking sanity checks (white-box attacks)

The built-in plans (`quick`, `standard`, `full`) ship in `bastion/audit/plans/`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bastion.attacks.evasion.base import EvasionAttack
from bastion.core.errors import ConfigError, did_you_mean
from bastion.core.params import parse_params
from bastion.core.registry import ATTACKS
from bastion.core.threat import ThreatModel

__all__ = ["FAMILIES", "Plan", "Scenario", "builtin_plans", "load_plan", "parse_plan"]

FAMILIES = ("evasion",)
_PLAN_FIELDS = ("name", "description", "n", "seed", "scenarios")
_SCENARIO_FIELDS = ("attack", "name", "family", "norm", "eps", "params", "n", "targeted", "max_queries", "checks")


@dataclass(frozen=True)
class Scenario:
    """One thing an audit does: an attack at one radius on the first `n` samples."""

    key: str
    family: str
    attack: str
    norm: str
    eps: float
    params: dict[str, Any]
    n: int
    targeted: bool = False
    max_queries: int | None = None
    checks: bool = False

    def spec(self) -> dict[str, Any]:
        """The scenario as plain JSON types (stored with its result)."""
        return {
            "key": self.key,
            "family": self.family,
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "params": dict(self.params),
            "n": self.n,
            "targeted": self.targeted,
            "max_queries": self.max_queries,
            "checks": self.checks,
        }

    def build(self, seed: int) -> EvasionAttack:
        """The configured attack (its parameters were validated when the plan was loaded)."""
        cls = ATTACKS.get(self.attack)
        threat = ThreatModel(
            norm=self.norm,  # type: ignore[arg-type]
            eps=self.eps,
            targeted=self.targeted,
            max_queries=self.max_queries,
        )
        return cls(threat=threat, seed=seed, **self.params)  # type: ignore[no-any-return]


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


# --- parsing with line numbers -------------------------------------------------------------------
class _Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of each key (and its own)."""

    line: int = 0
    lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            raise ConfigError(f"line {line}: field {key!r} appears twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)  # type: ignore[arg-type]


def parse_plan(text: str, *, source: str = "<plan>") -> Plan:
    """Validate plan text; every error names the source, the line and the field."""

    def fail(line: int, message: str) -> ConfigError:
        return ConfigError(f"{source} line {line}: {message}")

    try:
        doc = yaml.load(text, Loader=_Loader)
    except ConfigError as e:
        raise ConfigError(f"{source} {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(doc, _Map):
        raise ConfigError(f"{source}: a plan is a YAML mapping with a `scenarios` list")
    _known_fields(doc, _PLAN_FIELDS, "the plan", fail)
    name = _get(doc, "name", str, Path(source).stem, fail)
    description = _get(doc, "description", str, "", fail)
    n_default = _get(doc, "n", int, 500, fail)
    seed = _get(doc, "seed", int, 0, fail)
    raw = doc.get("scenarios")
    if not isinstance(raw, list) or not raw:
        raise fail(doc.lines.get("scenarios", doc.line), "`scenarios` must be a non-empty list")
    scenarios: list[Scenario] = []
    for i, entry in enumerate(raw, start=1):
        if not isinstance(entry, _Map):
            raise fail(doc.lines["scenarios"], f"scenario {i} must be a mapping with at least `attack`")
        for sc in _scenarios(entry, i, n_default, fail):
            if any(sc.key == other.key for other in scenarios):
                raise fail(entry.line, f"scenario key {sc.key!r} is used twice; give one of them another `name`")
            scenarios.append(sc)
    return Plan(name=name, description=description, seed=seed, scenarios=tuple(scenarios), text=text, source=source)


def _known_fields(m: _Map, allowed: tuple[str, ...], what: str, fail: Any) -> None:
    for key in m:
        if key not in allowed:
            raise fail(
                m.lines[key],
                f"unknown field {key!r} in {what}.{did_you_mean(str(key), allowed)} Fields: {', '.join(allowed)}",
            )


def _get(m: _Map, key: str, tp: type, default: Any, fail: Any) -> Any:
    if key not in m or m[key] is None:
        return default
    value = m[key]
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise fail(m.lines[key], f"`{key}` must be {'an integer' if tp is int else 'a ' + tp.__name__}; got {value!r}")
    return value


def _eps(value: Any, line: int, fail: Any) -> float:
    if isinstance(value, str) and "/" in value:
        num, _, den = value.partition("/")
        try:
            value = float(num) / float(den)
        except (ValueError, ZeroDivisionError):
            raise fail(
                line, f"`eps` takes a number, a fraction such as 8/255 or a list of them; got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise fail(line, f"`eps` takes a number >= 0, a fraction such as 8/255 or a list of them; got {value!r}")
    return float(value)


def _scenarios(m: _Map, i: int, n_default: int, fail: Any) -> list[Scenario]:
    _known_fields(m, _SCENARIO_FIELDS, f"scenario {i}", fail)
    attack = m.get("attack")
    if not isinstance(attack, str):
        raise fail(m.line, f"scenario {i} needs `attack`, a registered attack name (`bastion list attacks`)")
    if attack not in ATTACKS.names():
        names = ATTACKS.names()
        raise fail(
            m.lines["attack"], f"unknown attack {attack!r}.{did_you_mean(attack, names)} Known: {', '.join(names)}"
        )
    cls = ATTACKS.get(attack)
    family = _get(m, "family", str, "evasion", fail)
    if family not in FAMILIES:
        raise fail(m.lines["family"], f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    norm = _get(m, "norm", str, cls.norms[0], fail)
    if norm not in cls.norms:
        raise fail(m.lines["norm"], f"{attack} supports the {' and '.join(cls.norms)} norms; got {norm!r}")
    raw_eps = m.get("eps", 0.3 if norm == "linf" else 2.0)
    line_eps = m.lines.get("eps", m.line)
    radii = [_eps(v, line_eps, fail) for v in raw_eps] if isinstance(raw_eps, list) else [_eps(raw_eps, line_eps, fail)]
    if not radii:
        raise fail(line_eps, "`eps` is an empty list")
    n = _get(m, "n", int, n_default, fail)
    if n < 1:
        raise fail(m.lines.get("n", m.line), f"`n` must be at least 1; got {n}")
    targeted = _get(m, "targeted", bool, False, fail)
    max_queries = _get(m, "max_queries", int, None, fail)
    checks = _get(m, "checks", bool, False, fail)
    raw_params = m.get("params") or {}
    if not isinstance(raw_params, dict):
        raise fail(m.lines["params"], f"`params` must be a mapping of the attack's parameters; got {raw_params!r}")
    line_params = m.lines.get("params", m.line)
    try:
        params = parse_params(cls, [f"{k}={_text(v)}" for k, v in raw_params.items()])
    except ConfigError as e:
        raise fail(line_params, str(e)) from None
    name = _get(m, "name", str, attack, fail)
    out = []
    for eps in radii:
        key = name if len(radii) == 1 else f"{name}@{eps:g}"
        s = Scenario(
            key=key,
            family=family,
            attack=attack,
            norm=norm,
            eps=eps,
            params=params,
            n=n,
            targeted=targeted,
            max_queries=max_queries,
            checks=checks,
        )
        try:
            s.build(seed=0)  # the attack checks its parameters against the threat model
        except ConfigError as e:
            raise fail(line_params, f"scenario {i}: {e}") from None
        out.append(s)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)
