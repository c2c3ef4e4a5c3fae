"""The `ood` kind: an OOD detector against every out-of-distribution set the target allows.

    - detector: energy     # a registered OOD detector (`bastion list defenses`)
      name: ood-energy     # the scenario's key (default: the detector)
      n: 1000              # in-distribution test images, and at most as many images per OOD set
      sets: [uniform, inverted]   # default: digits, uniform, gaussian, inverted, rotated, and the
                                  # audit's --ood-data set when one is given (`data`)
      params: {temperature: 1.0}

In-distribution is the test split (positive, higher score); the sets come from `bastion.data.ood`.
A feature-based detector fits on the checkpoint's training split first (its seconds count the fit).
`digits` is left out when the model is audited on the digits themselves. Metrics: `auroc` and
`fpr95` averaged over the sets, and `auroc_SET`, `fpr95_SET` per set. See docs/audits.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.registry import DEFENSES
from bastion.data.ood import SYNTHETIC_SETS, synthetic_set
from bastion.report import Card, Figure, Section, Table, format_metric, level_of, pct
from bastion.report.images import strip
from bastion.report.plots import roc
from bastion.store import Artifact, ResultRow

__all__ = ["OODKind", "OODSettings"]

DATA_SET = "data"  # the audit's --ood-data set
SETS = (*SYNTHETIC_SETS, DATA_SET)


@dataclass(frozen=True)
class OODSettings:
    sets: tuple[str, ...] | None  # None: every set the target allows
    params: dict[str, Any]


@register_kind
class OODKind(ScenarioKind):
    name = "ood"
    method_field = "detector"
    registry = DEFENSES
    fields = ("sets", "params")
    title = "Out-of-distribution detection"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        cls = DEFENSES.get(method)
        params = entry.params(cls)
        entry.construct(cls, **params)  # the detector checks its own parameters
        sets = entry.strings("sets") or None
        for s in sets or ():
            if s not in SETS:
                raise entry.error("sets", f"unknown OOD set {s!r}; the sets are {', '.join(SETS)}")
        return [("", OODSettings(sets=sets, params=params))]

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        if scenario.settings.sets == (DATA_SET,) and target.ood_data is None:
            raise ConfigError(f"scenario {scenario.key!r} runs on the `data` OOD set only: give --ood-data SPEC")

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        st: OODSettings = scenario.settings
        x_id, _ = target.test(scenario.n)
        detector = DEFENSES.get(scenario.method)(**st.params)
        sets, warnings = _sets(st.sets, target, x_id, scenario.n, seed)
        per_set: dict[str, Any] = {}
        start = time.perf_counter()
        state = detector.fit(target.victim, *target.members(target.n_members))  # the training split, once
        seconds = time.perf_counter() - start
        for name, x_ood in sets.items():
            result = detector.run(target.victim, x_id, x_ood, state=state)
            seconds += result.seconds
            d = result.to_dict()
            per_set[name] = {k: d[k] for k in ("n_negative", "auroc", "fpr95", "tpr_at_fpr_1e-2", "roc")}
            per_set[name]["scores"] = d["per_sample"]["score"][x_id.shape[0] :]
            id_scores = d["per_sample"]["score"][: x_id.shape[0]]
        metrics: dict[str, float | int | None] = {
            "auroc": sum(s["auroc"] for s in per_set.values()) / len(per_set),
            "fpr95": sum(s["fpr95"] for s in per_set.values()) / len(per_set),
        }
        for name, s in per_set.items():
            metrics[f"auroc_{name}"], metrics[f"fpr95_{name}"] = s["auroc"], s["fpr95"]
        metrics["seconds"] = seconds
        record = {
            "detector": scenario.method,
            "params": detector.params(),
            "n_id": int(x_id.shape[0]),
            "id_scores": id_scores,
            "sets": per_set,
            "seconds": seconds,
            "warnings": warnings,
        }
        images = [x_id[0], *(x[0] for x in sets.values())]
        caption = "in-distribution | " + " | ".join(sets)
        artifact = Artifact(name="ood-sets.png", mime="image/png", data=strip(images), caption=caption)
        return ScenarioResult(metrics=metrics, record=record, seconds=seconds, warnings=warnings, artifacts=[artifact])

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        best = max(results, key=lambda r: r.metrics["auroc"])
        sets = best.record["sets"]
        hardest = min(sets, key=lambda s: sets[s]["auroc"])
        auc = best.metrics["auroc"]
        sentence = (
            f"The model's own outputs ({best.method}) flag inputs unlike its training data with a mean AUROC of "
            f"{auc:.3f} over {len(sets)} OOD sets. The hardest is {hardest}: at the threshold that keeps 95% of "
            f"real test images, {pct(sets[hardest]['fpr95'])} of its images still pass as in-distribution. "
            + (
                "Inputs from elsewhere would mostly be caught."
                if auc >= 0.9
                else "A deployment that may receive such inputs needs a dedicated OOD detector."
            )
        )
        return [
            Card(
                "OOD detection",
                auc,
                f"{auc:.3f}",
                "mean AUROC of the best detector",
                sentence,
                level_of(auc, bad_below=0.75, good_from=0.9),
                best.key,
            )
        ]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        return {r.key: {name: s["roc"] for name, s in r.record["sets"].items()} for r in results}

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        names = list(dict.fromkeys(s for r in results for s in r.record["sets"]))
        numeric = [False, False] + [True] * (len(names) + 1)

        def table(metric: str, show: Any, caption: str) -> Table:
            rows = [
                [
                    r.key,
                    r.method,
                    *(show(r.record["sets"][s][metric]) if s in r.record["sets"] else "–" for s in names),
                    show(r.metrics[metric]),
                ]
                for r in results
            ]
            return Table(["scenario", "detector", *names, "mean"], rows, numeric, caption=caption)

        tables = [
            table("auroc", lambda v: format_metric("auroc", v), "AUROC per OOD set (1 is perfect, 0.5 chance)."),
            table(
                "fpr95",
                pct,
                "FPR at 95% TPR per OOD set: the share of OOD images that pass as in-distribution "
                "at the threshold that keeps 95% of the test images (lower is better).",
            ),
        ]
        figures = [
            Figure(
                f"ood-roc-{key}",
                f"OOD ROC: {key}",
                "In-distribution test images kept (TPR) against OOD images let through (FPR), one curve per set.",
                roc({name: (c["fpr"], c["tpr"]) for name, c in sets.items()}, log=False),
            )
            for key, sets in curves.items()
        ]
        return Section(
            id="ood",
            title="Out-of-distribution detection",
            intro="Can the model's outputs tell its own kind of input from something else? Each detector scores "
            "the test images (in-distribution) and images from other sources: other digits, noise, inverted "
            "and rotated test images.",
            tables=tables,
            figures=figures,
            gallery_note="One image of each set: an in-distribution test image first, then the OOD sets in order.",
        )


def _sets(
    wanted: tuple[str, ...] | None, target: AuditTarget, x_id: Tensor, n: int, seed: int
) -> tuple[dict[str, Tensor], list[str]]:
    """The OOD sets of a scenario by name, and warnings about the ones left out."""
    warnings = []
    names = list(wanted) if wanted is not None else [*SYNTHETIC_SETS, *([DATA_SET] if target.ood_data else [])]
    if "digits" in names and target.dataset.name == "digits":
        names.remove("digits")
        warnings.append("the digits OOD set was left out: the model is audited on the digits themselves")
    out: dict[str, Tensor] = {}
    for i, name in enumerate(names):
        if name == DATA_SET:
            if target.ood_data is None:
                warnings.append("the `data` OOD set was left out: no --ood-data was given")
                continue
            out[target.ood_data.name] = target.ood_data.x_test[:n]
        else:
            out[name] = synthetic_set(name, x_id, n, seed + i)
    return out, warnings
