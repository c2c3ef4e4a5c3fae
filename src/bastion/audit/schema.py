"""Reading plan YAML with line numbers: every error names the source, the line and the field, and
unknown names get a "did you mean". Scenario kinds read their own fields through `Entry`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml

from bastion.core.errors import ConfigError, did_you_mean
from bastion.core.params import parse_eps, parse_params

__all__ = ["Entry", "load_yaml", "scenario_entries"]

T = TypeVar("T")


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


class Entry:
    """A YAML mapping of a plan (the plan itself, or one scenario) with typed, line-aware access.

    Args:
        m: the mapping as loaded.
        source: the plan's file name (or `<plan>`), for messages.
        what: how the mapping is named in messages ("the plan", "scenario 3").
    """

    def __init__(self, m: Any, source: str, what: str) -> None:
        self._m = m
        self.source = source
        self.what = what

    @property
    def keys(self) -> list[str]:
        return list(self._m)

    def __contains__(self, key: str) -> bool:
        return key in self._m

    def raw(self, key: str, default: Any = None) -> Any:
        return self._m.get(key, default)

    def line(self, key: str | None = None) -> int:
        """The line of `key` (the mapping's own line when the key is absent or not given)."""
        return self._m.lines.get(key, self._m.line) if key is not None else self._m.line

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self.source} line {self.line(key)}: {message}")

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse any field not in `allowed`, suggesting the closest one."""
        allowed = tuple(allowed)
        for key in self._m:
            if key not in allowed:
                hint = did_you_mean(str(key), allowed)
                raise self.error(key, f"unknown field {key!r} in {self.what}.{hint} Fields: {', '.join(allowed)}")

    def get(self, key: str, tp: type, default: Any) -> Any:
        """The value of `key`, checked to be of type `tp` (`default` when absent or null)."""
        if key not in self._m or self._m[key] is None:
            return default
        value = self._m[key]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise self.error(key, f"`{key}` must be {'an integer' if tp is int else 'a ' + tp.__name__}; got {value!r}")
        return value

    def positive_int(self, key: str, default: int) -> int:
        value: int = self.get(key, int, default)
        if value < 1:
            raise self.error(key, f"`{key}` must be at least 1; got {value}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A string or a list of strings."""
        value = self._m.get(key)
        if value is None:
            return default
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise self.error(key, f"`{key}` takes a name or a list of names; got {value!r}")
        return tuple(items)

    def radii(self, key: str, default: float) -> list[float]:
        """A radius (a number, or a fraction such as 8/255) or a non-empty list of them."""
        value = self._m.get(key, default)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise self.error(key, f"`{key}` is an empty list")
        out = []
        for v in values:
            try:
                out.append(parse_eps(v))
            except ConfigError:
                raise self.error(
                    key, f"`{key}` takes a number >= 0, a fraction such as 8/255 or a list of them; got {v!r}"
                ) from None
        return out

    def params(self, cls: type) -> dict[str, Any]:
        """The `params` mapping, parsed and checked against the parameters `cls` declares."""
        raw = self._m.get("params") or {}
        if not isinstance(raw, dict):
            raise self.error("params", f"`params` must be a mapping of {cls.name}'s parameters; got {raw!r}")  # type: ignore[attr-defined]
        try:
            return parse_params(cls, [f"{k}={_text(v)}" for k, v in raw.items()])
        except ConfigError as e:
            raise self.error("params", str(e)) from None

    def construct(self, cls: Callable[..., T], **kwargs: Any) -> T:
        """`cls(**kwargs)`, its own checks of its parameters reported at the `params` line."""
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise self.error("params", f"{self.what}: {e}") from None


def load_yaml(text: str, source: str) -> Entry:
    """The plan document as an `Entry`; a `ConfigError` naming the line for invalid YAML."""
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
    return Entry(doc, source, "the plan")


def scenario_entries(plan: Entry) -> list[Entry]:
    """The plan's scenarios, each as an `Entry`."""
    raw = plan.raw("scenarios")
    if not isinstance(raw, list) or not raw:
        raise plan.error("scenarios", "`scenarios` must be a non-empty list")
    out = []
    for i, m in enumerate(raw, start=1):
        if not isinstance(m, _Map):
            raise plan.error("scenarios", f"scenario {i} must be a mapping naming what it runs (e.g. `attack: pgd`)")
        out.append(Entry(m, plan.source, f"scenario {i}"))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)
