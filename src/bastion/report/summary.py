"""What a report says, as plain data: the scorecard (a headline number and one plain sentence per
family), the per-scenario table, the curves, the model card and the run's provenance. The HTML report
and `summary.json` are both made from this, so they never disagree."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from bastion.store import RunRow

__all__ = ["METRICS", "metric_names", "metric_value", "summarize"]

# The headline numbers of a scenario (from `AttackResult.to_dict()`): stored as the result's metrics,
# shown in the table, compared by `bastion compare` and bounded by `bastion check`.
METRICS = (
    "clean_accuracy",
    "robust_accuracy",
    "success_rate",
    "l2_median",
    "linf_max",
    "queries_mean",
    "queries_median",
    "queries_max",
    "seconds",
)

_WHITE_BOX = "white-box"


def _access(result: Any) -> str:
    return str(result.record.get("threat", {}).get("access", _WHITE_BOX))


def _reference_eps(results: list[Any], norm: str) -> float | None:
    """The radius most scenarios of this norm use (ties: the larger): the headline radius."""
    counts = Counter(r.spec["eps"] for r in results if r.spec["norm"] == norm)
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _eps_text(norm: str, eps: float) -> str:
    return f"{'L∞' if norm == 'linf' else 'L2'} ε = {eps:g}"


def _white_box_card(results: list[Any]) -> dict[str, Any] | None:
    wb = [r for r in results if r.family == "evasion" and _access(r) == _WHITE_BOX]
    if not wb:
        return None
    norm = "linf" if any(r.spec["norm"] == "linf" for r in wb) else "l2"
    eps = _reference_eps(wb, norm)
    at = [r for r in wb if r.spec["norm"] == norm and r.spec["eps"] == eps]
    worst = min(at, key=lambda r: r.metrics["robust_accuracy"])
    acc = worst.metrics["robust_accuracy"]
    if acc < 0.1:
        verdict = "The model is not robust: nearly every prediction can be changed by a perturbation this small."
    elif acc < 0.5:
        verdict = "Most predictions can be changed by such an attacker; the model resists only in part."
    else:
        verdict = "Most predictions survive the strongest attack tried at this radius."
    sentence = (
        f"Against an attacker who knows the model (gradient access), {_pct(acc)} of the test images keep their "
        f"label at {_eps_text(norm, eps)} — the worst of {len(at)} attack(s) at that radius was {worst.method}. "
        + verdict
    )
    return {
        "family": "white-box evasion",
        "headline": acc,
        "headline_text": _pct(acc),
        "label": f"robust accuracy at {_eps_text(norm, eps)}",
        "sentence": sentence,
        "worst": worst.key,
        "level": _level(acc),
    }


def _black_box_card(results: list[Any]) -> dict[str, Any] | None:
    bb = [r for r in results if r.family == "evasion" and _access(r) != _WHITE_BOX]
    if not bb:
        return None
    worst = min(bb, key=lambda r: r.metrics["robust_accuracy"])
    m = worst.metrics
    spec = worst.spec
    rate = m["success_rate"]
    first = [q for q in worst.record.get("extra", {}).get("first_success_query", []) if q >= 0]
    median_q = sorted(first)[len(first) // 2] if first else None
    budget = spec.get("max_queries")
    seen = "its scores" if _access(worst) == "scores" else "its labels only"
    sentence = (
        f"An attacker who sees {seen} ({worst.method}, {_eps_text(spec['norm'], spec['eps'])}"
        f"{f', {budget} queries per image' if budget else ''}) fooled {_pct(rate)} of the correctly classified "
        f"images"
        + (f", after a median of {median_q} queries." if median_q is not None else ".")
        + " A deployed API needs rate limits or output hardening if that number is high."
    )
    return {
        "family": "black-box evasion",
        "headline": m["robust_accuracy"],
        "headline_text": _pct(m["robust_accuracy"]),
        "label": "robust accuracy under query attacks",
        "sentence": sentence,
        "worst": worst.key,
        "level": _level(m["robust_accuracy"]),
    }


def _checks_card(results: list[Any]) -> dict[str, Any]:
    warned = [(r.key, w) for r in results for w in r.warnings if "overestimated" in w]  # masking findings only
    checked = sum(1 for r in results if r.spec.get("checks"))
    if warned:
        sentence = (
            f"{len(warned)} sanity-check warning(s): some robustness numbers above are probably overestimated "
            "(gradient masking or an attack that did not converge); see the warnings below."
        )
    elif checked:
        sentence = (
            f"No sign of gradient masking in the {checked} scenario(s) checked: the numbers above can be trusted."
        )
    else:
        sentence = "No scenario of this plan ran the gradient-masking checks."
    return {
        "family": "sanity checks",
        "headline": len(warned),
        "headline_text": f"{len(warned)} warning{'s' if len(warned) != 1 else ''}",
        "label": "gradient-masking checks",
        "sentence": sentence,
        "worst": warned[0][0] if warned else None,
        "level": "bad" if warned else "good",
    }


def _level(acc: float) -> str:
    return "bad" if acc < 0.1 else ("warn" if acc < 0.5 else "good")


def _curves(results: list[Any]) -> dict[str, Any]:
    """Robust accuracy vs eps per (attack, norm); success rate and median distance vs queries."""
    by_eps: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        label = f"{r.method} ({r.spec['norm']})"
        by_eps.setdefault(label, []).append((r.spec["eps"], r.metrics["robust_accuracy"]))
    eps_curves = {k: sorted(set(v)) for k, v in by_eps.items() if len({e for e, _ in v}) > 1}
    success, dist = {}, {}
    for r in results:
        curve = r.record.get("extra", {}).get("query_curve")
        if not curve or not curve.get("budgets"):
            continue
        success[r.key] = {"queries": curve["budgets"], "success_rate": curve["success_rate"]}
        if curve.get("median_dist"):
            dist[r.key] = {"queries": curve["budgets"], "median": curve["median_dist"], "norm": r.spec["norm"]}
    return {"robust_vs_eps": eps_curves, "success_vs_queries": success, "distance_vs_queries": dist}


def summarize(run: RunRow) -> dict[str, Any]:
    """The report's content for a stored run, in plain JSON types."""
    results = list(run.results)
    cards = [c for c in (_white_box_card(results), _black_box_card(results)) if c is not None]
    cards.append(_checks_card(results))
    meta = dict(run.model.meta)
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
        "model": {"name": run.model.name, "sha256": run.model.sha256, "meta": meta},
        "scorecard": cards,
        "scenarios": [
            {
                "key": r.key,
                "family": r.family,
                "method": r.method,
                "access": _access(r),
                "norm": r.spec["norm"],
                "eps": r.spec["eps"],
                "n": r.spec["n"],
                "params": r.spec["params"],
                "max_queries": r.spec.get("max_queries"),
                **r.metrics,
                "warnings": list(r.warnings),
            }
            for r in results
        ],
        "curves": _curves(results),
    }


def metric_names(summary: dict[str, Any]) -> list[str]:
    """Every name `bastion check` and `bastion compare` accept: `clean_accuracy` and METRIC.SCENARIO."""
    names = ["clean_accuracy"]
    for s in summary["scenarios"]:
        names += [f"{k}.{s['key']}" for k in METRICS]
    return names


def metric_value(summary: dict[str, Any], name: str) -> float | None:
    """The value of a metric named as in `metric_names` (None when the run has no such number)."""
    if name == "clean_accuracy":
        return float(summary["run"]["clean_accuracy"])
    metric, _, key = name.partition(".")
    for s in summary["scenarios"]:
        if s["key"] == key and metric in METRICS:
            v = s.get(metric)
            return None if v is None else float(v)
    return None
