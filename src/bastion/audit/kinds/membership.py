"""The `membership` kind: a membership-inference attack on a balanced set of members and non-members.

    - attack: modified-entropy   # a registered membership attack (`bastion list attacks`)
      name: mia-mentr            # the scenario's key (default: the attack)
      n: 1000                    # members and non-members, each: the first n training images the model
                                 # saw and the first n test images
      params: {}

    - attack: lira               # shadow models: trained with the audited model's recipe
      n: 1000
      params: {shadows: 8, online: true, fixed_variance: true, augment: mirror}

Metrics: `auroc`, `tpr_at_fpr_1e-3`, `tpr_at_fpr_1e-2`, `balanced_accuracy` (of the best threshold),
`seconds`. Card: the strongest attack's AUROC with what it means. See docs/audits.md.

An attack with shadow models (LiRA) takes the 2n candidates as its population: shadow i trains, with
the audited model's architecture and recipe (`AuditTarget.train_fresh`), on the candidates that
`attack.assign` gives it, every candidate in exactly half the shadows. That assignment is drawn from
the seed alone, blind to which candidates are members: the target's membership enters only in the
measurement, never in the shadows' statistics. The shadows are kept in the audit's model directory
under a key naming the model, data, split, n, shadow count, seed and index (not the scoring settings),
so a resumed audit, and other LiRA scenarios with the same shadows, read them back instead of training.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.privacy import MembershipAttack, ShadowReference
from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, method_params, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
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


def _shadows(
    attack: MembershipAttack, target: AuditTarget, x: Tensor, y: Tensor, n: int, seed: int, progress: ProgressFn | None
) -> tuple[ShadowReference, dict[str, Any]]:
    """Train (or read back) the attack's shadow models on halves of the 2n candidates; their reference
    and a record of them: set sizes, cache keys, wall time (trained or read, whichever happened)."""
    start = time.perf_counter()
    count = int(attack.params()["shadows"])
    spec = {
        "model": target.model_sha256,
        "data": target.data,
        "split_seed": target.split_seed,
        "n": n,
        "shadows": count,
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    keys = [f"{attack.name}-shadow{i}of{count}-{digest}" for i in range(count)]

    def train(xi: Tensor, yi: Tensor, i: int) -> nn.Module:
        return target.train_fresh(xi, yi, seed=seed + 1 + i, progress=progress, cache_key=keys[i])

    reference = attack.fit(x, y, train)
    record = {
        "models": count,
        "population": 2 * n,
        "train_sizes": reference.keep.sum(dim=1).tolist(),
        "target_train_size": target.n_members,
        "keys": keys,
        "seconds": time.perf_counter() - start,
    }
    return reference, record


@register_kind
class MembershipKind(ScenarioKind):
    name = "membership"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params",)
    title = "Membership inference"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        return method_params(entry, ATTACKS.get(method))

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        if ATTACKS.get(scenario.method).needs_reference and target.trainer is None:
            raise ConfigError(
                f"scenario {scenario.key!r} trains shadow models like the audited one, and {target.model_name} "
                "cannot be retrained: its architecture or recipe is unknown"
            )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        n = min(scenario.n, target.n_members, target.dataset.x_test.shape[0])
        x_in, y_in = target.members(n)
        x_out, y_out = target.test(n)
        x, y = torch.cat([x_in, x_out]), torch.cat([y_in, y_out])
        member = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
        attack: MembershipAttack = ATTACKS.get(scenario.method)(seed=seed, **scenario.settings.params)
        reference, shadows = None, None
        if attack.needs_reference:
            reference, shadows = _shadows(attack, target, x, y, n, seed, progress)
        result = attack.run(target.victim, x, y, member, reference=reference)
        warnings = []
        if target.members_assumed:
            warnings.append(
                "nobody recorded what this model was trained on: its members are assumed to be the training "
                f"split of {target.data} (split seed {target.split_seed})"
            )
        record = result.to_dict()
        record["warnings"] = warnings
        seconds = result.seconds
        if shadows is not None:
            record["shadows"] = shadows
            seconds += shadows["seconds"]
            record["seconds"] = seconds
        return ScenarioResult(
            metrics={k: record[k] for k in METRICS},
            record=record,
            seconds=seconds,
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
            "(non-members), one query each (LiRA: one per view, after training shadow models like the audited "
            "one on random halves of those images, blind to which are members). With class thresholds (Song & "
            "Mittal) the attacker knows the membership of half of them, fits one threshold per class on that half "
            "and is measured on the rest.",
            tables=[table],
            figures=[figure],
        )
