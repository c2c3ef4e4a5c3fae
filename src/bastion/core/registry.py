"""Registries: names to classes or factories, one per kind of thing.

A duplicate name raises; an unknown name raises `UnknownNameError` listing what exists and the
closest spelling. An entry may belong to a family (an attack to `evasion` or `membership`, a defense
to `postprocess` or `ood`): `bastion list` groups by it and an audit picks a scenario's kind from it.
`bastion list`, the CLI's help and the docs are generated from these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bastion.core.errors import UnknownNameError, did_you_mean

__all__ = ["ATTACKS", "DATASETS", "DEFENSES", "MODELS", "RECIPES", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one kind (`kind` is used in messages: "model", "data set", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._families: dict[str, str] = {}

    def register(self, name: str, *, family: str = "") -> Callable[[T], T]:
        """Decorator adding the object under `name` (in `family`, if the kind has families); a name may be
        registered once."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._families[name] = family
            return obj

        return add

    def get(self, name: str, *, family: str | None = None) -> T:
        """The object registered as `name` (when `family` is given, only among that family's entries)."""
        names = self.names(family)
        if name not in names:
            what = f"{family} {self.kind}" if family else self.kind
            hint = ""
            if family and name in self._items:
                hint = f" ({name!r} is in the {self._families[name]} family)"
            raise UnknownNameError(
                f"unknown {what} {name!r}{hint}.{did_you_mean(name, names)} Known: {', '.join(names) or 'none'}"
            )
        return self._items[name]

    def family(self, name: str) -> str:
        """The family `name` was registered in ("" when the kind has none)."""
        self.get(name)
        return self._families[name]

    def families(self) -> list[str]:
        """The families of the entries, in order of first registration."""
        return list(dict.fromkeys(self._families.values()))

    def names(self, family: str | None = None) -> list[str]:
        """The registered names, sorted (only those of `family` when given)."""
        return sorted(n for n in self._items if family is None or self._families[n] == family)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


MODELS: Registry[Callable[..., object]] = Registry("model")
DATASETS: Registry[Callable[..., object]] = Registry("data set")
RECIPES: Registry[object] = Registry("training recipe")
ATTACKS: Registry[type] = Registry("attack")
DEFENSES: Registry[type] = Registry("defense")
