"""What a report says, as plain data: the scorecard (cards from each family's presenter), the
scenarios with their stored metrics, each family's curves, the model card and the run's provenance.
The HTML report and `summary.json` are both made from this, so they never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bastion.report.sections import Presenter
from bastion.store import ResultRow, RunRow

__all__ = ["Comparison", "Delta", "by_family", "compare", "metric_names", "metric_value", "summarize"]


def by_family(run: RunRow) -> dict[str, list[ResultRow]]:
    """The run's results grouped by family, families in the order of their first scenario."""
    groups: dict[str, list[ResultRow]] = {}
    for r in run.results:
        groups.setdefault(r.family, []).append(r)
    return groups


def summarize(run: RunRow, presenters: Mapping[str, Presenter]) -> dict[str, Any]:
    """The report's content for a stored run, in plain JSON types. `presenters` maps each family to how
    it is reported; results of a family with none are listed with their metrics only."""
    groups = by_family(run)
    cards = [asdict(c) for family, rs in groups.items() if family in presenters for c in presenters[family].cards(rs)]
    curves = {family: presenters[family].curves(rs) for family, rs in groups.items() if family in presenters}
    return {
        "run": {
            "id": run.id,
            "status": run.status,
            "plan": run.plan_name,
            "plan_sha256": run.plan_sha256,
            "data": run.data,
            "split_seed": run.split_seed,
            "seed": run.seed,
            "samples": len(run.sample_indices),
            "clean_accuracy": run.clean_accuracy,
            "versions": dict(run.versions),
            "device": run.device,
            "host": run.host,
            "started_at": run.started_at.isoformat(timespec="seconds"),
            "ended_at": run.ended_at.isoformat(timespec="seconds") if run.ended_at else None,
        },
        "model": {"name": run.model.name, "sha256": run.model.sha256, "meta": dict(run.model.meta)},
        "scorecard": cards,
        "scenarios": [
            {
                "key": r.key,
                "family": r.family,
                "method": r.method,
                "spec": dict(r.spec),
                "metrics": dict(r.metrics),
                "warnings": list(r.warnings),
            }
            for r in run.results
        ],
        "curves": curves,
    }


def metric_names(summary: dict[str, Any]) -> list[str]:
    """Every name `bastion check` and `bastion compare` accept: `clean_accuracy` and METRIC.SCENARIO for
    each metric a scenario stored (its kind decides which: docs/audits.md lists them)."""
    names = ["clean_accuracy"]
    for s in summary["scenarios"]:
        names += [f"{k}.{s['key']}" for k in s["metrics"]]
    return names


def metric_value(summary: dict[str, Any], name: str) -> float | None:
    """The value of a metric named as in `metric_names` (None when the run has no such number)."""
    if name == "clean_accuracy":
        return float(summary["run"]["clean_accuracy"])
    metric, _, key = name.partition(".")
    for s in summary["scenarios"]:
        if s["key"] == key:
            v = s["metrics"].get(metric)
            return None if v is None else float(v)
    return None


# Numbers that say how an attack ran rather than what it found: not compared.
_NOT_COMPARED = ("seconds.", "queries_mean.", "linf_max.")


@dataclass(frozen=True)
class Delta:
    """One metric of two runs: `name` as in `metric_names`, split into `metric` and `scenario` (empty for
    clean accuracy); `delta` is b - a (None when either is missing)."""

    name: str
    metric: str
    scenario: str
    a: float | None
    b: float | None
    delta: float | None


@dataclass(frozen=True)
class Comparison:
    """Two runs side by side: the metrics they share, and the scenarios only one of them has."""

    rows: list[Delta]
    only_a: list[str]
    only_b: list[str]


def compare(a: dict[str, Any], b: dict[str, Any]) -> Comparison:
    """The metrics two summaries share (in `a`'s order), with their differences b - a. `bastion compare`
    prints this and the dashboard's compare page shows it."""
    names_b = set(metric_names(b))
    rows = []
    for name in metric_names(a):
        if name not in names_b or name.startswith(_NOT_COMPARED):
            continue
        va, vb = metric_value(a, name), metric_value(b, name)
        metric, _, scenario = name.partition(".")
        rows.append(Delta(name, metric, scenario, va, vb, None if va is None or vb is None else vb - va))
    keys_a, keys_b = [s["key"] for s in a["scenarios"]], [s["key"] for s in b["scenarios"]]
    return Comparison(rows, [k for k in keys_a if k not in keys_b], [k for k in keys_b if k not in keys_a])
