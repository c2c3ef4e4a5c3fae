"""The `evasion` kind: an evasion attack at one radius on the first `n` test images.

    - attack: square       # a registered evasion attack (`bastion list attacks`)
      name: square         # the scenario's key (default: the attack, or ATTACK+DEFENSE when defended)
      norm: linf           # linf | l2
      eps: 0.3             # a number, "8/255", or a list: one scenario per radius, keyed NAME@EPS
      params: {n_queries: 1000}
      n: 500
      targeted: false
      max_queries: 1000    # per-sample budget of a black-box attack
      checks: true         # gradient-masking sanity checks (white-box attacks)
      defenses: [aaa]      # output post-processors the oracle of a black-box attack serves through

Metrics: the `AttackResult` headline numbers (`METRICS`), and for a universal perturbation (`uap`,
`fg-uap`) the papers' held-out numbers too (`UNIVERSAL_METRICS`). Cards: white-box and black-box
robust accuracy, universal perturbations, output defenses (defended beside undefended), sanity
checks. See docs/audits.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bastion.attacks.evasion.base import EvasionAttack
from bastion.attacks.evasion.checks import sanity_checks
from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.random import random_targets
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.threat import Access, ThreatModel
from bastion.core.victim import Victim
from bastion.defenses.postprocess import build_postprocessors
from bastion.report import Card, Figure, Section, Table, format_metric, level_of, pct
from bastion.report.images import triptych
from bastion.report.plots import Panel, lines
from bastion.store import Artifact, ResultRow

__all__ = ["METRICS", "UNIVERSAL_METRICS", "EvasionKind", "EvasionSettings"]

# The headline numbers of an evasion scenario (from `AttackResult.to_dict()`): stored as its metrics.
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
# A universal perturbation's numbers on the images held out from fitting it, all of them, correctly
# classified or not (`universal_records` in attacks/evasion/_universal.py): stored beside `METRICS`.
UNIVERSAL_METRICS = ("fooling_rate_heldout", "accuracy_under_v_heldout")
GALLERY = 4  # adversarial examples kept per scenario
_WHITE_BOX = "white-box"


@dataclass(frozen=True)
class EvasionSettings:
    norm: str
    eps: float
    params: dict[str, Any]
    targeted: bool = False
    max_queries: int | None = None
    checks: bool = False
    defenses: tuple[str, ...] = ()


def build_attack(method: str, settings: EvasionSettings, seed: int) -> EvasionAttack:
    """The configured attack (its parameters were validated when the plan was loaded)."""
    threat = ThreatModel(
        norm=settings.norm,  # type: ignore[arg-type]
        eps=settings.eps,
        targeted=settings.targeted,
        max_queries=settings.max_queries,
    )
    return ATTACKS.get(method)(threat=threat, seed=seed, **settings.params)  # type: ignore[no-any-return]


@register_kind
class EvasionKind(ScenarioKind):
    name = "evasion"
    method_field = "attack"
    registry = ATTACKS
    fields = ("norm", "eps", "params", "targeted", "max_queries", "checks", "defenses")
    title = "Evasion"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        cls = ATTACKS.get(method)
        norm = entry.get("norm", str, cls.norms[0])
        if norm not in cls.norms:
            raise entry.error("norm", f"{method} supports the {' and '.join(cls.norms)} norms; got {norm!r}")
        radii = entry.radii("eps", 0.3 if norm == "linf" else 2.0)
        defenses = entry.strings("defenses")
        if defenses and cls.access == _WHITE_BOX:
            raise entry.error(
                "defenses",
                f"{method} is a white-box attack: it uses the model's gradients and would bypass an output "
                "defense; serve a black-box attack (e.g. square) through it",
            )
        try:
            build_postprocessors(defenses)
        except ConfigError as e:
            raise entry.error("defenses", str(e)) from None
        common = {
            "norm": norm,
            "params": entry.params(cls),
            "targeted": entry.get("targeted", bool, False),
            "max_queries": entry.get("max_queries", int, None),
            "checks": entry.get("checks", bool, False),
            "defenses": defenses,
        }
        out = []
        for eps in radii:
            settings = EvasionSettings(eps=eps, **common)
            entry.construct(build_attack, method=method, settings=settings, seed=0)  # checked against the threat
            out.append(("" if len(radii) == 1 else f"@{eps:g}", settings))
        return out

    def access(self, scenario: Scenario) -> Access:
        """The attack's own: score- and decision-based attacks query the model and nothing else."""
        return ATTACKS.get(scenario.method).access  # type: ignore[no-any-return]

    def default_name(self, method: str, settings: Any) -> str:
        return "+".join((method, *(d.partition(":")[0] for d in settings.defenses)))

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        st: EvasionSettings = scenario.settings
        x, y = target.test(scenario.n)
        attack = build_attack(scenario.method, st, seed)
        targets = random_targets(y, target.dataset.num_classes, seed) if st.targeted else None
        result = attack.run(
            target.victim, x, y, target_labels=targets, progress=progress, postprocess=build_postprocessors(st.defenses)
        )
        warnings = list(result.warnings)
        if st.checks and isinstance(target.victim, Victim):  # the checks need gradients: a deployed model has none
            warnings += sanity_checks(attack, result, target.victim, x, y)
        record = result.to_dict()
        record["warnings"] = warnings
        metrics = {k: record[k] for k in METRICS}
        if attack.universal:
            metrics.update({k: record["extra"][k] for k in UNIVERSAL_METRICS})
        return ScenarioResult(
            metrics=metrics,
            record=record,
            seconds=result.seconds,
            warnings=warnings,
            artifacts=_gallery(result, x, target.dataset.classes),
        )

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        undefended = [r for r in results if not r.spec.get("defenses")]
        cards = [
            _white_box_card(undefended),
            _black_box_card(undefended),
            _universal_card(undefended),
            _defenses_card(results),
        ]
        return [c for c in cards if c is not None] + [_checks_card(results)]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        """Robust accuracy vs eps per (attack, norm); success rate and median distance vs queries."""
        by_eps: dict[str, list[tuple[float, float]]] = {}
        for r in results:
            if r.spec.get("defenses"):
                continue
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

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        columns = ["scenario", "attack", "access", "defenses", "norm", "ε", "images", "clean", "robust", "success"]
        columns += ["median L2", "max L∞", "median queries", "seconds", "warnings"]
        rows = []
        for r in results:
            m = r.metrics
            rows.append(
                [
                    r.key,
                    r.method,
                    _access(r),
                    ", ".join(r.spec.get("defenses") or ()) or "–",
                    r.spec["norm"],
                    f"{r.spec['eps']:g}",
                    str(r.spec["n"]),
                    pct(m["clean_accuracy"]),
                    pct(m["robust_accuracy"]),
                    pct(m["success_rate"]),
                    format_metric("l2_median", m["l2_median"]),
                    format_metric("linf_max", m["linf_max"]),
                    format_metric("queries_median", m["queries_median"]) if m["queries_max"] else "–",
                    f"{m['seconds']:.1f}",
                    str(len(r.warnings)),
                ]
            )
        tables = [Table(columns, rows, [False, False, False, False, False] + [True] * 10)]
        universal = _universal_table(results)
        if universal is not None:
            tables.append(universal)
        pairs = _defended_pairs(results)
        if pairs:
            tables.append(
                Table(
                    [
                        "defended scenario",
                        "served through",
                        "undefended",
                        "robust (undefended)",
                        "robust (defended)",
                        "success (undefended)",
                        "success (defended)",
                        "median queries (undefended)",
                        "median queries (defended)",
                    ],
                    [
                        [
                            d.key,
                            ", ".join(d.spec["defenses"]),
                            u.key,
                            pct(u.metrics["robust_accuracy"]),
                            pct(d.metrics["robust_accuracy"]),
                            pct(u.metrics["success_rate"]),
                            pct(d.metrics["success_rate"]),
                            format_metric("q", u.metrics["queries_median"]),
                            format_metric("q", d.metrics["queries_median"]),
                        ]
                        for d, u in pairs
                    ],
                    [False, False, False] + [True] * 6,
                    caption="Output defenses: the same attack, images, budget and seed, served with and without them.",
                )
            )
        return Section(
            id="evasion",
            title="Evasion",
            intro="How far an attacker must change an image to change its label: white-box attacks see the "
            "gradients, score-based ones the scores, decision-based ones the label only, each on a query budget.",
            tables=tables,
            figures=_figures(curves),
            gallery_note="Each strip: the clean image, the adversarial one, and the perturbation amplified to the "
            "full range (grey is no change).",
        )


def _gallery(result: AttackResult, x: torch.Tensor, classes: tuple[str, ...] | list[str]) -> list[Artifact]:
    """Up to `GALLERY` successful adversarial examples: clean | adversarial | amplified perturbation."""
    picks = (result.success & result.clean_correct).nonzero().squeeze(1)[:GALLERY].tolist()
    out = []
    for i in picks:
        caption = (
            f"{classes[int(result.y[i])]} → {classes[int(result.y_adv[i])]}  "
            f"(L∞ {float(result.linf[i]):.3f}, L2 {float(result.l2[i]):.2f})"
        )
        png = triptych(x[i].cpu(), result.x_adv[i].cpu())
        out.append(Artifact(name=f"example-{i}.png", mime="image/png", data=png, caption=caption))
    return out


def _access(result: ResultRow) -> str:
    return str(result.record.get("threat", {}).get("access", _WHITE_BOX))


def _reference_eps(results: list[ResultRow], norm: str) -> float | None:
    """The radius most scenarios of this norm use (ties: the larger): the headline radius."""
    counts = Counter(r.spec["eps"] for r in results if r.spec["norm"] == norm)
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]  # type: ignore[no-any-return]


def _eps_text(norm: str, eps: float) -> str:
    return f"{'L∞' if norm == 'linf' else 'L2'} ε = {eps:g}"


def _robustness_level(acc: float) -> Any:
    return level_of(acc, bad_below=0.1, good_from=0.5)


def _white_box_card(results: list[ResultRow]) -> Card | None:
    wb = [r for r in results if _access(r) == _WHITE_BOX]
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
        f"Against an attacker who knows the model (gradient access), {pct(acc)} of the test images keep their "
        f"label at {_eps_text(norm, eps)} — the worst of {len(at)} attack(s) at that radius was {worst.method}. "
        + verdict
    )
    return Card(
        "white-box evasion",
        acc,
        pct(acc),
        f"robust accuracy at {_eps_text(norm, eps)}",
        sentence,
        _robustness_level(acc),
        worst.key,
    )


def _black_box_card(results: list[ResultRow]) -> Card | None:
    bb = [r for r in results if _access(r) != _WHITE_BOX]
    if not bb:
        return None
    worst = min(bb, key=lambda r: r.metrics["robust_accuracy"])
    m, spec = worst.metrics, worst.spec
    first = [q for q in worst.record.get("extra", {}).get("first_success_query", []) if q >= 0]
    median_q = sorted(first)[len(first) // 2] if first else None
    budget = spec.get("max_queries")
    seen = "its scores" if _access(worst) == "scores" else "its labels only"
    sentence = (
        f"An attacker who sees {seen} ({worst.method}, {_eps_text(spec['norm'], spec['eps'])}"
        f"{f', {budget} queries per image' if budget else ''}) fooled {pct(m['success_rate'])} of the correctly "
        f"classified images"
        + (f", after a median of {median_q} queries." if median_q is not None else ".")
        + " A deployed API needs rate limits or output hardening if that number is high."
    )
    acc = m["robust_accuracy"]
    return Card(
        "black-box evasion",
        acc,
        pct(acc),
        "robust accuracy under query attacks",
        sentence,
        _robustness_level(acc),
        worst.key,
    )


def _universal(results: Sequence[ResultRow]) -> list[ResultRow]:
    """The scenarios of universal perturbations that kept held-out images (the papers' numbers)."""
    return [r for r in results if r.metrics.get("fooling_rate_heldout") is not None]


def _universal_card(results: list[ResultRow]) -> Card | None:
    uni = _universal(results)
    if not uni:
        return None
    worst = min(uni, key=lambda r: r.metrics["accuracy_under_v_heldout"])
    m, extra, spec = worst.metrics, worst.record.get("extra", {}), worst.spec
    acc = m["accuracy_under_v_heldout"]
    sentence = (
        f"One perturbation ({worst.method}, {_eps_text(spec['norm'], spec['eps'])}), fitted on {extra['n_fit']} "
        f"images and added to {extra['n_heldout']} others, changed the prediction of {pct(m['fooling_rate_heldout'])} "
        f"of them; the model's accuracy on them fell from {pct(extra['clean_accuracy_heldout'])} to {pct(acc)}. "
        "Such a perturbation is made once and fools images the attacker has never seen."
    )
    return Card(
        "universal perturbation",
        acc,
        pct(acc),
        "accuracy under one perturbation for all images (held-out images)",
        sentence,
        _robustness_level(acc),
        worst.key,
    )


def _universal_table(results: Sequence[ResultRow]) -> Table | None:
    uni = _universal(results)
    if not uni:
        return None
    columns = ["scenario", "attack", "norm", "ε", "fit images", "held-out images", "fooling rate"]
    columns += ["clean (held-out)", "under v (held-out)", "fooling rate (fit)", "dominant class", "‖v‖"]
    rows = []
    for r in uni:
        m, e = r.metrics, r.record["extra"]
        rows.append(
            [
                r.key,
                r.method,
                r.spec["norm"],
                f"{r.spec['eps']:g}",
                str(e["n_fit"]),
                str(e["n_heldout"]),
                pct(m["fooling_rate_heldout"]),
                pct(e["clean_accuracy_heldout"]),
                pct(m["accuracy_under_v_heldout"]),
                pct(e["fooling_rate_fit"]),
                pct(e["dominant_share"]),
                f"{e['v_linf' if r.spec['norm'] == 'linf' else 'v_l2']:.4g}",
            ]
        )
    return Table(
        columns,
        rows,
        [False, False, False] + [True] * 9,
        caption="Universal perturbations: one v per scenario, fitted on some images and added to the others. "
        "Fooling rate: the share of the held-out images, correctly classified or not, whose prediction v "
        "changes (the papers' metric); under v: the model's accuracy on them with v added.",
    )


def _defended_pairs(results: Sequence[ResultRow]) -> list[tuple[ResultRow, ResultRow]]:
    """(defended, undefended) scenarios that differ only in their output defenses."""

    def same(r: ResultRow) -> tuple[Any, ...]:
        spec = {k: v for k, v in r.spec.items() if k not in ("key", "defenses")}
        return tuple(sorted((k, repr(v)) for k, v in spec.items()))

    plain = {same(r): r for r in results if not r.spec.get("defenses")}
    return [(r, plain[same(r)]) for r in results if r.spec.get("defenses") and same(r) in plain]


def _defenses_card(results: Sequence[ResultRow]) -> Card | None:
    pairs = _defended_pairs(results)
    if not pairs:
        return None
    d, u = min(pairs, key=lambda p: p[0].metrics["robust_accuracy"])
    acc = d.metrics["robust_accuracy"]
    sentence = (
        f"Served through {', '.join(d.spec['defenses'])}, {d.method} fooled {pct(d.metrics['success_rate'])} of the "
        f"correctly classified images, against {pct(u.metrics['success_rate'])} without it (same images, budget and "
        "seed). A defense that only changes what the API serves does not make the model itself more robust."
    )
    return Card(
        "output defenses", acc, pct(acc), "robust accuracy behind the defense", sentence, _robustness_level(acc), d.key
    )


def _checks_card(results: Sequence[ResultRow]) -> Card:
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
    return Card(
        "sanity checks",
        len(warned),
        f"{len(warned)} warning{'s' if len(warned) != 1 else ''}",
        "gradient-masking checks",
        sentence,
        "bad" if warned else "good",
        warned[0][0] if warned else None,
    )


def _figures(curves: dict[str, Any]) -> list[Figure]:
    out = []
    by_eps = curves["robust_vs_eps"]
    if by_eps:
        norms = sorted({label.rsplit("(", 1)[1].rstrip(")") for label in by_eps})
        panels = [
            Panel(
                xlabel=f"ε ({'L∞' if norm == 'linf' else 'L2'})",
                ylabel="robust accuracy (%)",
                series={k.rsplit(" (", 1)[0]: v for k, v in by_eps.items() if k.endswith(f"({norm})")},
                percent=True,
            )
            for norm in norms
        ]
        out.append(
            Figure(
                "robust-vs-eps",
                "Robust accuracy vs ε",
                "Share of the audited images still classified correctly as the attacker's budget grows.",
                lines(panels),
            )
        )
    if curves["success_vs_queries"]:
        series = {
            k: list(zip(c["queries"], c["success_rate"], strict=True)) for k, c in curves["success_vs_queries"].items()
        }
        out.append(
            Figure(
                "success-vs-queries",
                "Success rate vs queries",
                "Share of the correctly classified images a query attack has fooled within a budget.",
                lines([Panel("queries per image", "success rate (%)", series, percent=True, xlog=True)]),
            )
        )
    if curves["distance_vs_queries"]:
        series = {
            k: list(zip(c["queries"], c["median"], strict=True)) for k, c in curves["distance_vs_queries"].items()
        }
        out.append(
            Figure(
                "distance-vs-queries",
                "Median perturbation vs queries",
                "Median distance of the best adversarial input a decision-based attack holds after each budget "
                "(lower is a stronger attack).",
                lines([Panel("queries per image", "median distance", series, xlog=True)]),
            )
        )
    return out


def _points(xs: list[float], ys: list[float | None]) -> list[tuple[float, float | None]]:
    return list(zip(xs, ys, strict=True))
