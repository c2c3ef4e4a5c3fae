"""What a scenario kind gives the report: its scorecard cards, its curves (plain data for
`summary.json`) and its section of the HTML page. The report knows kinds only through `Presenter`,
so a new family adds its own presentation without a change here (the audit's kinds implement it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bastion.store import ResultRow

__all__ = ["Card", "Figure", "Level", "Presenter", "Section", "Table", "format_metric", "level_of", "pct"]

Level = Literal["good", "warn", "bad"]


@dataclass(frozen=True)
class Card:
    """One scorecard entry: a headline number and the plain sentence that says what it means.

    Attributes:
        family: the card's heading ("white-box evasion", "membership inference", ...).
        headline: the number (None when there is none to give).
        headline_text: the number as shown.
        label: what the number is.
        sentence: what it means for the model's owner, in one or two plain sentences.
        level: red/amber/green (`bad`, `warn`, `good`) by the thresholds documented in docs/audits.md.
        worst: the key of the scenario the headline comes from.
    """

    family: str
    headline: float | None
    headline_text: str
    label: str
    sentence: str
    level: Level
    worst: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of strings; `numeric` marks the right-aligned columns."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A plot, as inline SVG."""

    id: str
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class Section:
    """A kind's part of the report: an introduction, tables, plots and (from the results' images) a gallery."""

    id: str
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    gallery_note: str = ""


class Presenter(Protocol):
    """How a scenario kind is reported; `name` is the family its results are stored under."""

    name: str

    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        """The kind's scorecard cards for a run's results of this family."""
        ...

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        """The data behind the kind's plots, in plain JSON types (written to summary.json)."""
        ...

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        """The kind's section of the HTML report."""
        ...


def pct(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def format_metric(name: str, v: float | None) -> str:
    """A stored metric as shown: shares as percentages, AUROC with three decimals, the rest with four digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    metric = name.split(".", 1)[0]
    if metric.startswith("auroc"):
        return f"{v:.3f}"
    if any(word in metric for word in ("accuracy", "rate", "tpr", "fpr", "asr", "drop", "fidelity")):
        return pct(v)
    return f"{v:.4g}"


def level_of(value: float, *, bad_below: float, good_from: float) -> Level:
    """`bad` under `bad_below`, `good` from `good_from` up, `warn` between (for numbers where higher is safer)."""
    return "bad" if value < bad_below else ("good" if value >= good_from else "warn")
