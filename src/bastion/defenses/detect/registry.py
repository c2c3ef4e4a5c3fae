"""Registration of the detectors: each family's base names its `family`, the decorator files the
class under it in `DEFENSES` (`bastion list defenses` groups by it)."""

from __future__ import annotations

from typing import Any

from bastion.core.registry import DEFENSES

__all__ = ["register_detector"]


def register_detector(name: str) -> Any:
    """Class decorator: set `cls.name` and add the class to `DEFENSES` in its base's `family`."""

    def add(cls: type) -> type:
        cls.name = name  # type: ignore[attr-defined]
        DEFENSES.register(name, family=cls.family)(cls)  # type: ignore[attr-defined]
        return cls

    return add
