"""What each dashboard page shows, as template context built from the store (no HTTP here).

The run page is the report's own body (`bastion.report.run_context` with the report's `_run.html.j2`),
the compare page is `bastion.report.compare` (what `bastion compare` prints), and the model history
plots with the report's `plots.timeline`: the dashboard adds navigation, filters and a timeline, not a
second way to present a run.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bastion.core.errors import ConfigError
from bastion.report import Presenter, compare, format_metric, pct, run_context, summarize
from bastion.report.plots import timeline
from bastion.store import RunRow, Store

__all__ = ["Filters", "NotFound", "compare_page", "model_page", "models_page", "run_page", "runs_page"]

# matplotlib's pyplot keeps global state: the pages that draw take turns (requests run in a thread pool).
_DRAW = threading.Lock()


class NotFound(LookupError):
    """The page asks for a run or a model the store does not hold."""


def _known_run(store: Store, run_id: int) -> None:
    ids = store.run_ids()
    if run_id not in ids:
        held = f"it holds runs {ids[0]} to {ids[-1]}" if ids else "it holds no run yet"
        raise NotFound(f"The store has no run {run_id}; {held}.")


@dataclass(frozen=True)
class Filters:
    """The runs list's filters, as given in the query string (an empty field is no filter)."""

    model: int | None = None
    plan: str | None = None
    family: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive: runs started on that day are listed

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        """Filters from `model`, `plan`, `family`, `since` and `until` (dates as YYYY-MM-DD)."""

        def text(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value or None

        model = text("model")
        if model is not None and not model.isdigit():
            raise ConfigError(f"model takes a model id (a whole number); got {model!r}")
        return cls(
            model=None if model is None else int(model),
            plan=text("plan"),
            family=text("family"),
            since=_day(text("since"), "since"),
            until=_day(text("until"), "until"),
        )

    def active(self) -> bool:
        return any(v is not None for v in (self.model, self.plan, self.family, self.since, self.until))


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name} takes a date as YYYY-MM-DD; got {value!r}") from None


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def when(t: datetime | None) -> str:
    """A stored time as shown (UTC; SQLite hands times back without their zone)."""
    if t is None:
        return "–"
    return (t if t.tzinfo is None else t.astimezone(UTC)).strftime("%Y-%m-%d %H:%M UTC")


def _robust(run: RunRow) -> tuple[float | None, str | None]:
    """The lowest robust accuracy among the run's scenarios, and which scenario it comes from."""
    found = [(r.metrics["robust_accuracy"], r.key) for r in run.results if r.metrics.get("robust_accuracy") is not None]
    return min(found) if found else (None, None)


def _row(run: RunRow) -> dict[str, Any]:
    worst, key = _robust(run)
    return {
        "id": run.id,
        "model": run.model.name,
        "model_id": run.model_id,
        "plan": run.plan_name,
        "data": run.data,
        "started": when(run.started_at),
        "status": run.status,
        "clean": pct(run.clean_accuracy),
        "robust": pct(worst),
        "robust_key": key or "",
        "families": list(dict.fromkeys(r.family for r in run.results)),
        "scenarios": len(run.results),
    }


def runs_page(store: Store, filters: Filters) -> dict[str, Any]:
    """The runs list, newest first, under `filters`, with the filter menus' choices."""
    runs = store.runs(
        model_id=filters.model,
        plan=filters.plan,
        family=filters.family,
        since=None if filters.since is None else _midnight(filters.since),
        until=None if filters.until is None else _midnight(filters.until) + timedelta(days=1),
    )
    plans, families = store.facets()
    models = [(m.id, m.name) for m, _, _ in store.models()]
    return {"runs": [_row(r) for r in runs], "filters": filters, "plans": plans, "families": families, "models": models}


def models_page(store: Store) -> dict[str, Any]:
    """Every model with its number of runs and its latest run."""
    rows = [
        {"id": m.id, "name": m.name, "sha256": m.sha256, "runs": n, "last": when(last), "created": when(m.created_at)}
        for m, n, last in store.models()
    ]
    return {"models": rows}


def run_page(store: Store, run_id: int, presenters: Mapping[str, Presenter]) -> dict[str, Any]:
    """A run as its report shows it, plus the other runs it can be compared with."""
    _known_run(store, run_id)
    run = store.run(run_id)
    with _DRAW:
        context = run_context(run, presenters)
    others = [(r.id, f"run {r.id} · {r.model.name} · {r.plan_name} · {when(r.started_at)}") for r in store.runs()]
    return {**context, "model_id": run.model_id, "others": [o for o in others if o[0] != run_id]}


def compare_page(store: Store, run_a: int, run_b: int, presenters: Mapping[str, Presenter]) -> dict[str, Any]:
    """Two runs' shared metrics grouped by scenario, with their differences (B - A)."""
    _known_run(store, run_a)
    _known_run(store, run_b)
    with _DRAW:
        a, b = summarize(store.run(run_a), presenters), summarize(store.run(run_b), presenters)
    diff = compare(a, b)
    groups: dict[str, list[dict[str, Any]]] = {}
    for d in diff.rows:
        sign = "" if d.delta is None or d.delta <= 0 else "+"
        groups.setdefault(d.scenario or "whole run", []).append(
            {
                "metric": d.metric,
                "a": format_metric(d.name, d.a),
                "b": format_metric(d.name, d.b),
                "delta": "–" if d.delta is None else sign + format_metric(d.name, d.delta),
                "trend": "same" if not d.delta else ("up" if d.delta > 0 else "down"),
            }
        )
    return {"a": a, "b": b, "groups": groups, "only_a": diff.only_a, "only_b": diff.only_b, "pct": pct}


def model_page(store: Store, model_id: int) -> dict[str, Any]:
    """A model's runs over time: robust accuracy per evasion scenario (and clean accuracy) per run."""
    if model_id not in {m.id for m, _, _ in store.models()}:
        raise NotFound(f"The store has no model {model_id}; the models page lists those it holds.")
    model = store.model_row(model_id)
    runs = sorted(store.runs(model_id=model_id), key=lambda r: (r.started_at, r.id))  # oldest first
    keys = list(
        dict.fromkeys(r.key for run in runs for r in run.results if r.metrics.get("robust_accuracy") is not None)
    )
    series: dict[str, list[tuple[datetime, float | None]]] = {"clean accuracy": []}
    rows = []
    for run in runs:
        values = {r.key: r.metrics.get("robust_accuracy") for r in run.results}
        series["clean accuracy"].append((run.started_at, run.clean_accuracy))
        for k in keys:
            series.setdefault(f"robust accuracy: {k}", []).append((run.started_at, values.get(k)))
        worst, _ = _robust(run)
        rows.append(
            {
                "id": run.id,
                "started": when(run.started_at),
                "plan": run.plan_name,
                "status": run.status,
                "clean": pct(run.clean_accuracy),
                "worst": pct(worst),
                "values": [pct(values.get(k)) for k in keys],
            }
        )
    svg = None
    if runs:
        with _DRAW:
            svg = timeline(series, ylabel="accuracy (%)")
    return {
        "model": {"id": model.id, "name": model.name, "sha256": model.sha256, "created": when(model.created_at)},
        "meta": model.meta,
        "keys": keys,
        "rows": rows[::-1],  # newest first, as in the runs list
        "svg": svg,
    }
