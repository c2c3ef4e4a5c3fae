"""The `backdoor` kind: poison the model's training set, train a model like it, measure the backdoor,
and screen for it.

    - attack: badnets          # a registered poisoning attack (`bastion list attacks`)
      name: badnets-5pct       # the scenario's key (default: the attack)
      n: 1000                  # test images measured (at most the test split less the held-out set)
      params: {rate: 0.05, target: 0}
      detectors: [strip]       # backdoor detectors run on the poisoned model (default: none)

The training set is the one the audited model trained on (its `train_n` first training images); the
poisoned model trains with the audited model's own architecture and recipe (`AuditTarget.train_fresh`)
and is kept as a checkpoint beside the run, so a resumed audit does not train it again. The last
`HELDOUT` test images are the defender's clean held-out set (a run-time detector fits and sets its
threshold there) and are never measured.

Metrics: `clean_accuracy` of the poisoned model, its `asr` and `asr_over_correct`, the `clean_drop` from
the audited model's accuracy, `clean_model_asr` (the trigger on the audited model: what it does without
a backdoor), `seconds`; per run-time detector D (family `backdoor-input`) `D_auroc`, `D_tpr`, `D_fpr`
on clean test images the model gets right against triggered ones it sends to the target; per
training-set inspector D (family `backdoor-data`) `D_auroc`, `D_poisons_removed`, `D_clean_removed`,
and the `D_asr_after` / `D_clean_accuracy_after` of a model retrained without what it removed (kept as
a checkpoint too). See docs/audits.md and docs/backdoors.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.poisoning import Poisoned, PoisoningAttack
from bastion.audit.kinds.base import (
    Scenario,
    ScenarioKind,
    ScenarioResult,
    clean_model_key,
    method_params,
    model_key,
    register_kind,
    unknown_recipe,
)
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError, did_you_mean
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS, DEFENSES
from bastion.core.victim import Victim
from bastion.report import Card, Figure, Section, Table, format_metric, level_of, pct
from bastion.report.images import strip
from bastion.report.plots import roc
from bastion.store import Artifact, ResultRow

__all__ = ["HELDOUT", "METRICS", "BackdoorKind", "BackdoorSettings", "unknown_detector"]

METRICS = ("clean_accuracy", "asr", "asr_over_correct", "clean_drop", "clean_model_asr", "seconds")
DETECTOR_FAMILIES = ("backdoor-input", "backdoor-data")
HELDOUT = 200  # the last test images: the defender's clean held-out set


@dataclass(frozen=True)
class BackdoorSettings:
    params: dict[str, Any]
    detectors: tuple[str, ...] = ()


@register_kind
class BackdoorKind(ScenarioKind):
    name = "backdoor"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params", "detectors")
    title = "Backdoors"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        ((_, checked),) = method_params(entry, ATTACKS.get(method))
        recipe = ATTACKS.get(method)(**checked.params).crafting_recipe
        if recipe is not None and (problem := unknown_recipe(recipe)):
            raise entry.error("params", problem)
        detectors = entry.strings("detectors")
        for name in detectors:
            if problem := unknown_detector(name):
                raise entry.error("detectors", problem)
        return [("", BackdoorSettings(params=checked.params, detectors=detectors))]

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        if target.dataset.x_test.shape[0] <= HELDOUT:
            raise ConfigError(
                f"scenario {scenario.key!r} needs more than {HELDOUT} test images (the last {HELDOUT} are the "
                f"defender's held-out set); {target.data} has {target.dataset.x_test.shape[0]}"
            )
        if target.trainer is None:
            raise ConfigError(
                f"scenario {scenario.key!r} trains a poisoned copy of the model, and {target.model_name} cannot be "
                "retrained: its architecture or recipe is unknown"
            )
        st: BackdoorSettings = scenario.settings
        inspectors = [d for d in st.detectors if DEFENSES.get(d).family == "backdoor-data"]
        if inspectors and not ATTACKS.get(scenario.method)(**st.params).poisons_the_set:
            raise ConfigError(
                f"scenario {scenario.key!r}: {', '.join(inspectors)} inspect a poisoned training set, and "
                f"{scenario.method} with these parameters poisons training batches instead (training control); "
                "poison a fixed set (wanet: poisoning=dataset) or use a run-time detector"
            )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        start = time.perf_counter()
        st: BackdoorSettings = scenario.settings
        attack = ATTACKS.get(scenario.method)(seed=seed, **st.params)
        k = target.victim.num_classes
        x_train, y_train = target.members(target.n_members)
        surrogate = None
        if (recipe := attack.crafting_recipe) is not None:  # a robust model to craft the poisons on
            robust = target.train_fresh(
                x_train,
                y_train,
                seed=seed,
                progress=progress,
                cache_key=clean_model_key(target, recipe, seed),
                recipe={"name": recipe},
            )
            surrogate = target.victim.like(robust)
        poisoned = attack.poison(x_train, y_train, k, surrogate=surrogate)
        key = model_key(target, scenario, seed)
        victim = target.victim.like(
            target.train_fresh(
                poisoned.x, poisoned.y, seed=seed, progress=progress, cache_key=key, batch=poisoned.batch
            ),
        )
        n_test = target.dataset.x_test.shape[0]
        x, y = target.test(min(scenario.n, n_test - HELDOUT))
        result = attack.evaluate(victim, x, y, poisoned, seconds=time.perf_counter() - start)
        on_clean = attack.evaluate(target.victim, x, y, poisoned, seconds=0.0)
        record = result.to_dict()
        record["clean_model"] = {"clean_accuracy": on_clean.clean_accuracy, "asr": on_clean.asr}
        record["model_key"] = key
        metrics = {k_: record[k_] for k_ in ("clean_accuracy", "asr", "asr_over_correct", "seconds")}
        metrics["clean_drop"] = on_clean.clean_accuracy - result.clean_accuracy
        metrics["clean_model_asr"] = on_clean.asr
        record["detectors"] = {}
        for name in st.detectors:
            found = self._detect(name, attack, victim, target, poisoned, x, y, seed=seed, key=key, progress=progress)
            record["detectors"][name] = found
            metrics.update({f"{name}_{m}": v for m, v in found["metrics"].items()})
        metrics["seconds"] = time.perf_counter() - start
        record["seconds"] = metrics["seconds"]
        shown, edited = poisoned.index[:4], poisoned.x[poisoned.index[:4]]
        if not shown.numel():  # a training-control attack poisons batches, not the set: show its trigger
            shown = torch.arange(min(4, y_train.numel()))
            edited = attack.apply_trigger(x_train[shown]).clamp(0, 1)
        images = [img for i, after in zip(shown, edited, strict=True) for img in (x_train[i], after)]
        labels = attack.target_labels(y_train[shown], k).tolist()
        caption = f"clean | poisoned training image, in pairs; labelled {labels}"
        artifact = Artifact(name="poisoned.png", mime="image/png", data=strip(images), caption=caption)
        return ScenarioResult(metrics=metrics, record=record, seconds=metrics["seconds"], artifacts=[artifact])

    def _detect(
        self,
        name: str,
        attack: PoisoningAttack,
        victim: Victim,
        target: AuditTarget,
        poisoned: Poisoned,
        x: Tensor,
        y: Tensor,
        *,
        seed: int,
        key: str,
        progress: ProgressFn | None,
    ) -> dict[str, Any]:
        """One detector on the poisoned model: its record, with the metrics the scenario stores."""
        detector = DEFENSES.get(name)(seed=seed)
        if detector.family == "backdoor-input":
            clean, triggered = attack.screening_sets(victim, x, y)
            x_h, y_h = target.dataset.x_test[-HELDOUT:], target.dataset.y_test[-HELDOUT:]
            # the audited model, trained on clean data, is the independent model a detector may use (NTD's FE)
            d = detector.run(victim, clean, triggered, x_fit=x_h, y_fit=y_h, reference=target.victim).to_dict()
            metrics = {"auroc": d["auroc"], "tpr": d["extra"]["tpr"], "fpr": d["extra"]["fpr"]}
        else:
            flags = torch.zeros(poisoned.y.numel(), dtype=torch.bool)
            flags[poisoned.index] = True
            d = detector.run(victim, poisoned.x, poisoned.y, flags).to_dict()
            keep = torch.ones_like(flags)
            keep[d["extra"]["removed"]] = False
            cleaned = target.train_fresh(
                poisoned.x[keep],
                poisoned.y[keep],
                seed=seed,
                progress=progress,
                cache_key=f"{key}-{name}",
                batch=poisoned.batch,
            )
            after = attack.evaluate(target.victim.like(cleaned), x, y, poisoned, seconds=0.0)
            metrics = {
                "auroc": d["auroc"],
                "poisons_removed": d["extra"]["poisons_removed"],
                "clean_removed": d["extra"]["clean_removed"],
                "asr_after": after.asr,
                "clean_accuracy_after": after.clean_accuracy,
            }
        d.pop("per_sample")
        return {"family": detector.family, "metrics": metrics, **d}

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        worst = max(results, key=lambda r: r.metrics["asr"])
        m, params = worst.metrics, worst.record["params"]
        asr = m["asr"]
        sentence = (
            f"Poisoning {pct(params['rate'])} of the training set with {worst.method} gives a model that looks "
            f"normal (clean accuracy {pct(m['clean_accuracy'])}, {_points(m['clean_drop'])} from the audited "
            f"model) but sends {pct(asr)} of triggered images where the attacker wants. "
            + (
                "Whoever can touch the training data can plant a backdoor: check the data's provenance, and "
                "screen it or the model."
                if asr >= 0.5
                else "The backdoor did not take hold at this rate."
            )
            + _detector_sentence(worst)
        )
        return [
            Card(
                "backdoor",
                asr,
                pct(asr),
                "attack success rate of the strongest backdoor",
                sentence,
                level_of(1 - asr, bad_below=0.5, good_from=0.9),
                worst.key,
            )
        ]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        return {f"{r.key}: {name}": d["roc"] for r in results for name, d in r.record.get("detectors", {}).items()}

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = [
            [
                r.key,
                r.method,
                pct(r.record["params"]["rate"]),
                str(r.record["n_poisoned"]),
                pct(r.metrics["clean_accuracy"]),
                _points(r.metrics["clean_drop"]),
                pct(r.metrics["asr"]),
                pct(r.metrics["asr_over_correct"]),
                pct(r.metrics["clean_model_asr"]),
                f"{r.metrics['seconds']:.1f}",
            ]
            for r in results
        ]
        columns = ["scenario", "attack", "rate", "poisoned", "clean acc.", "drop", "ASR", "ASR (correct)"]
        table = Table(
            [*columns, "ASR on the audited model", "seconds"],
            rows,
            [False, False] + [True] * 8,
            caption="ASR: triggered test images of the other classes sent where the backdoor says; on the audited "
            "model, the trigger alone (no backdoor) should do little. Drop: clean accuracy lost to the poison, in "
            "points.",
        )
        tables = [table]
        detector_rows = [
            [
                r.key,
                name,
                "inputs" if d["family"] == "backdoor-input" else "training set",
                format_metric("auroc", d["metrics"]["auroc"]),
                *(
                    [pct(d["metrics"]["tpr"]), pct(d["metrics"]["fpr"]), "-", "-", "-"]
                    if d["family"] == "backdoor-input"
                    else [
                        "-",
                        "-",
                        pct(d["metrics"]["poisons_removed"]),
                        pct(d["metrics"]["clean_removed"]),
                        pct(d["metrics"]["asr_after"]),
                    ]
                ),
                f"{d['seconds']:.1f}",
            ]
            for r in results
            for name, d in r.record.get("detectors", {}).items()
        ]
        figures = []
        if detector_rows:
            columns = ["scenario", "detector", "screens", "AUROC", "TPR", "FPR", "poisons removed", "clean removed"]
            tables.append(
                Table(
                    [*columns, "ASR after retraining", "seconds"],
                    detector_rows,
                    [False, False, False] + [True] * 7,
                    caption="Run-time detectors screen clean test images the model gets right against triggered ones "
                    "it sends to the target, at the threshold each sets on held-out clean images (TPR: triggered "
                    "inputs caught; FPR: clean inputs rejected). Training-set inspectors score every training "
                    "image; a model is retrained without what they remove.",
                )
            )
            figures.append(
                Figure(
                    "backdoor-roc",
                    "Backdoor detectors' ROC",
                    "Triggered inputs or poisoned training images caught (TPR) against clean ones flagged (FPR).",
                    roc({k: (c["fpr"], c["tpr"]) for k, c in curves.items()}, log=False),
                )
            )
        return Section(
            id="backdoor",
            title="Backdoors",
            intro="What can an attacker who edits part of the training set do? Each attack poisons the training "
            "images the audited model learned from, a model is trained on them with the same recipe, and its "
            "clean accuracy and the trigger's success rate are measured on the test images; the detectors a "
            "scenario names then screen the poisoned model's inputs or its training set.",
            tables=tables,
            figures=figures,
            gallery_note="Training images before and after poisoning, in pairs.",
        )


def unknown_detector(name: str) -> str | None:
    """Why `name` is not a backdoor detector, or None when it is one."""
    known = [n for f in DETECTOR_FAMILIES for n in DEFENSES.names(f)]
    if name in known:
        return None
    hint = did_you_mean(name, known) or f" The detectors are {', '.join(known)}."
    return f"unknown backdoor detector {name!r}.{hint}"


def _detector_sentence(r: ResultRow) -> str:
    """What the scenario's detectors made of the backdoor, in a sentence ("" without detectors)."""
    found = r.record.get("detectors", {})
    if not found:
        return ""
    best = max(found, key=lambda name: found[name]["metrics"]["auroc"])
    return f" The best detector, {best}, separates its evidence with AUROC {found[best]['metrics']['auroc']:.3f}."


def _points(drop: float) -> str:
    """A loss of accuracy as signed points: 0.012 lost -> "-1.2 points"."""
    return f"{-drop * 100:+.1f} points"
