"""Registries: names to classes or factories, one per kind of thing.

A duplicate name raises; an unknown name raises `UnknownNameError` listing what exists and the
closest spelling. `bastion list`, the CLI's help and the docs are generated from these.
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

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the object under `name`; a name may be registered once."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{did_you_mean(name, self._items)} Known: {known}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

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
