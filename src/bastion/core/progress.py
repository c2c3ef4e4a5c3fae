"""Progress reporting: library code calls a callback; the CLI renders it (library code never prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProgressEvent", "ProgressFn", "report"]


@dataclass(frozen=True)
class ProgressEvent:
    """`completed` of `total` units of `task` are done; `info` carries numbers worth showing (loss, accuracy)."""

    task: str
    completed: int
    total: int
    info: dict[str, Any] = field(default_factory=dict)


ProgressFn = Callable[[ProgressEvent], None]


def report(progress: ProgressFn | None, task: str, completed: int, total: int, **info: Any) -> None:
    """Send one event to `progress` when there is a listener."""
    if progress is not None:
        progress(ProgressEvent(task, completed, total, info))
