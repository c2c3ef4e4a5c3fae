"""The `membership` kind: a membership-inference attack on a balanced set of members and non-members.

    - attack: modified-entropy   # a registered membership attack (`bastion list attacks`)
      name: mia-mentr            # the scenario's key (default: the attack)
      n: 1000                    # members and non-members, each: the first n training images the model
                                 # saw and the first n test images
      params: {}

Metrics: `auroc`, `tpr_at_fpr_1e-3`, `tpr_at_fpr_1e-2`, `balanced_accuracy` (of the best threshold),
`seconds`. Card: the strongest attack's AUROC with what it means. See docs/audits.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, method_params, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS
from bastion.report import Card, Figure, Level, Section, Table, format_metric, pct
from bastion.report.plots import roc
from bastion.store import ResultRow

__all__ = ["METRICS", "MembershipKind", "membership_level"]

METRICS = ("auroc", "tpr_at_fpr_1e-3", "tpr_at_fpr_1e-2", "balanced_accuracy", "seconds")


def membership_level(auroc: float, tpr_1pct: float) -> Level:
    """Red from AUROC 0.7 or 10% of members found at 1% FPR; green under AUROC 0.55 with under 2% found
    at 1% FPR (chance is 1%); amber between (docs/audits.md)."""
    if auroc >= 0.7 or tpr_1pct >= 0.10:
        return "bad"
    if auroc < 0.55 and tpr_1pct < 0.02:
        return "good"
    return "warn"


@register_kind
class MembershipKind(ScenarioKind):
    name = "membership"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params",)
    title = "Membership inference"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        return method_params(entry, ATTACKS.get(method))

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        n = min(scenario.n, target.n_members, target.dataset.x_test.shape[0])
        x_in, y_in = target.members(n)
        x_out, y_out = target.test(n)
        x, y = torch.cat([x_in, x_out]), torch.cat([y_in, y_out])
        member = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
        attack = ATTACKS.get(scenario.method)(seed=seed, **scenario.settings.params)
        result = attack.run(target.victim, x, y, member)
        warnings = []
        if target.members_assumed:
            warnings.append(
                "nobody recorded what this model was trained on: its members are assumed to be the training "
                f"split of {target.data} (split seed {target.split_seed})"
            )
        record = result.to_dict()
        record["warnings"] = warnings
        return ScenarioResult(
            metrics={k: record[k] for k in METRICS},
            record=record,
            seconds=result.seconds,
            warnings=warnings,
        )

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        best = max(results, key=lambda r: r.metrics["auroc"])
        m = best.metrics
        auc, tpr = m["auroc"], m["tpr_at_fpr_1e-2"]
        n_in, n_out = best.record["n_positive"], best.record["n_negative"]
        if auc >= 0.7 or tpr >= 0.1:
            verdict = (
                "The model leaks which images it was trained on; train with regularisation or differential privacy."
            )
        elif auc >= 0.55 or tpr >= 0.02:
            verdict = "The model leaks some membership: worth watching if its training data are sensitive."
        else:
            verdict = "The scores reveal little about membership to an attacker of this strength."
        sentence = (
            f"From the model's scores alone, {best.method} tells its training images from unseen ones with AUROC "
            f"{auc:.3f} (0.5 is chance; balanced accuracy {pct(m['balanced_accuracy'])}); at 1% false positives it "
            f"finds {pct(tpr)} of the members ({n_in} members, {n_out} non-members). " + verdict
        )
        return [
            Card(
                "membership inference",
                auc,
                f"{auc:.3f}",
                "AUROC of the strongest attack",
                sentence,
                membership_level(auc, tpr),
                best.key,
            )
        ]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        return {
            "roc": {r.key: r.record["roc"] for r in results},
            "floor": min(1 / r.record["n_negative"] for r in results),
        }

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = [
            [
                r.key,
                r.method,
                str(r.record["n_positive"]),
                str(r.record["n_negative"]),
                format_metric("auroc", r.metrics["auroc"]),
                pct(r.metrics["tpr_at_fpr_1e-3"]),
                pct(r.metrics["tpr_at_fpr_1e-2"]),
                pct(r.metrics["balanced_accuracy"]),
                f"{r.metrics['seconds']:.2f}",
            ]
            for r in results
        ]
        columns = ["scenario", "attack", "members", "non-members", "AUROC", "TPR at 0.1% FPR", "TPR at 1% FPR"]
        table = Table(
            [*columns, "balanced accuracy", "seconds"],
            rows,
            [False, False] + [True] * 7,
            caption="TPR at 0.1% FPR needs at least 1,000 non-members to mean what it says; with fewer it is the "
            "share of members scored above every non-member.",
        )
        curves_xy = {k: (c["fpr"], c["tpr"]) for k, c in curves["roc"].items()}
        figure = Figure(
            "membership-roc",
            "Membership ROC (log-log)",
            "Members caught (TPR) against non-members wrongly flagged (FPR), on log axes as the "
            "membership-inference literature plots them: what matters is the left edge, few false positives.",
            roc(curves_xy, log=True, floor=curves["floor"]),
        )
        return Section(
            id="membership",
            title="Membership inference",
            intro="Can an attacker who queries the model tell whether an image was in its training set? Each "
            "attack scores the first training images the model saw (members) and as many test images "
            "(non-members), one query each. With class thresholds (Song & Mittal) the attacker knows the "
            "membership of half of them, fits one threshold per class on that half and is measured on the rest.",
            tables=[table],
            figures=[figure],
        )
