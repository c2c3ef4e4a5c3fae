"""The `protection` kind: protect the training set (unlearnable examples), train on it, and measure what a
model learns from it.

    - attack: one-pixel-shortcut   # a registered data protection (`bastion list attacks`, family protection)
      name: ops                    # the scenario's key (default: the protection)
      n: 1000                      # test images measured
      params: {}
      adversarial: fgsm-rs         # also train adversarially with this recipe (default fgsm-rs; none: don't)

The protected set is the training set the audited model learned from (its `train_n` first training
images), perturbed by the data owner; labels are kept. A model is trained from scratch on it with the
audited model's own architecture and recipe (`AuditTarget.train_fresh`), and, unless `adversarial: none`,
another with the adversarial-training recipe an appropriator would use against such noise (at that
recipe's defaults for the data: `fgsm-rs` at L-inf 0.3 on digits, 8/255 on colour images). The clean
references are the audited model itself (same recipe, clean data) and a model trained adversarially on
the clean set (shared by every scenario with the same recipe). Every model is kept as a checkpoint
beside the run, so a resumed audit does not train it again. A protection that crafts against a model
(error-minimizing, self-ensemble) trains its own from a fresh model of the audited architecture.

Metrics: `accuracy` (test accuracy of the model trained on the protected set; lower is better),
`clean_accuracy` (the audited model), `drop` (points taken), `adv_accuracy`, `adv_clean_accuracy` and
`adv_drop` (the same under adversarial training; None without), `linf`, `l0_pixels` (the perturbation's
size), `seconds`. See docs/audits.md and docs/protection.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from bastion.attacks.poisoning.protect import DataProtection, perturbation_size
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
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS
from bastion.core.results import ProtectionResult
from bastion.report import Card, Section, Table, level_of, pct
from bastion.report.images import strip
from bastion.store import Artifact, ResultRow

__all__ = ["METRICS", "ProtectionKind", "ProtectionSettings", "adversarial_recipe"]

METRICS = (
    "accuracy",
    "clean_accuracy",
    "drop",
    "adv_accuracy",
    "adv_clean_accuracy",
    "adv_drop",
    "linf",
    "l0_pixels",
    "seconds",
)
NONE = "none"


@dataclass(frozen=True)
class ProtectionSettings:
    params: dict[str, Any]
    adversarial: str = "fgsm-rs"


def adversarial_recipe(name: str) -> str | None:
    """Why `name` is neither a training recipe nor `none`, or None when it is one of them."""
    return None if name == NONE else unknown_recipe(name)


@register_kind
class ProtectionKind(ScenarioKind):
    name = "protection"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params", "adversarial")
    title = "Data protection"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        ((_, checked),) = method_params(entry, ATTACKS.get(method))
        adversarial = entry.get("adversarial", str, "fgsm-rs")
        if problem := adversarial_recipe(adversarial):
            raise entry.error("adversarial", problem)
        return [("", ProtectionSettings(params=checked.params, adversarial=adversarial))]

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        if target.trainer is None:
            raise ConfigError(
                f"scenario {scenario.key!r} trains models on the protected set, and {target.model_name} cannot be "
                "retrained: its architecture or recipe is unknown"
            )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        start = time.perf_counter()
        st: ProtectionSettings = scenario.settings
        method: DataProtection = ATTACKS.get(scenario.method)(seed=seed, **st.params)
        x_train, y_train = target.members(target.n_members)
        protected = method.protect(
            x_train, y_train, target.victim.num_classes, build=target.build_fresh, progress=progress
        )
        x, y = target.test(scenario.n)
        key = model_key(target, scenario, seed)
        trained = target.train_fresh(protected.x, y_train, seed=seed, progress=progress, cache_key=key)
        accuracy = {"standard": _accuracy(target, trained, x, y)}
        clean = {"standard": _accuracy(target, target.victim.model, x, y)}
        if st.adversarial != NONE:
            recipe = {"name": st.adversarial}
            adv = target.train_fresh(
                protected.x, y_train, seed=seed, progress=progress, cache_key=f"{key}-{st.adversarial}", recipe=recipe
            )
            adv_clean = target.train_fresh(
                x_train,
                y_train,
                seed=seed,
                progress=progress,
                cache_key=clean_model_key(target, st.adversarial, seed),
                recipe=recipe,
            )
            accuracy["adversarial"] = _accuracy(target, adv, x, y)
            clean["adversarial"] = _accuracy(target, adv_clean, x, y)
        size = perturbation_size(x_train, protected.x)
        result = ProtectionResult(
            method=scenario.method,
            params=method.params(),
            seed=seed,
            n_train=int(y_train.numel()),
            n_protected=int(protected.index.numel()),
            linf=float(size["linf"]),
            l2=float(size["l2"]),
            l0_pixels=int(size["l0_pixels"]),
            accuracy=accuracy,
            clean_accuracy=clean,
            n_test=int(y.numel()),
            craft_seconds=protected.seconds,
            seconds=time.perf_counter() - start,
            extra=protected.extra,
        )
        record = result.to_dict()
        record["adversarial_recipe"] = None if st.adversarial == NONE else st.adversarial
        record["model_key"] = key
        drop = result.drop
        metrics: dict[str, float | int | None] = {
            "accuracy": accuracy["standard"],
            "clean_accuracy": clean["standard"],
            "drop": drop["standard"],
            "adv_accuracy": accuracy.get("adversarial"),
            "adv_clean_accuracy": clean.get("adversarial"),
            "adv_drop": drop.get("adversarial"),
            "linf": result.linf,
            "l0_pixels": result.l0_pixels,
            "seconds": result.seconds,
        }
        shown = protected.index[:4]
        images = [img for i in shown for img in (x_train[i], protected.x[i])]
        caption = f"clean | protected training image, in pairs; labelled {y_train[shown].tolist()}"
        artifact = Artifact(name="protected.png", mime="image/png", data=strip(images), caption=caption)
        warnings = []
        if not protected.extra.get("converged", True):
            rounds = protected.extra["rounds"]
            warnings.append(f"{scenario.key}: the crafting surrogate did not reach the stop error in {rounds} rounds")
        return ScenarioResult(
            metrics=metrics, record=record, seconds=result.seconds, warnings=warnings, artifacts=[artifact]
        )

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        strongest = min(results, key=_appropriator_best)  # the protection that kept the most from being learned
        m = strongest.metrics
        sentence = (
            f"A model trained on the training set protected by {strongest.method} reaches {pct(m['accuracy'])} "
            f"test accuracy, against {pct(m['clean_accuracy'])} trained on the clean set"
        )
        if m["adv_accuracy"] is not None:
            sentence += (
                f"; with adversarial training ({strongest.record['adversarial_recipe']}) {pct(m['adv_accuracy'])} "
                f"against {pct(m['adv_clean_accuracy'])}"
            )
        learned = _appropriator_best(strongest)
        trained = "every way of training that was tried" if m["adv_accuracy"] is not None else "the model's recipe"
        sentence += ". " + (
            f"Publishing the images protected this way keeps them from being learned by {trained}."
            if learned < 0.5
            else f"An appropriator still learns most of the task from the protected images with {trained}."
        )
        return [
            Card(
                "data protection",
                learned,
                pct(learned),
                "best accuracy an appropriator reached on the protected data",
                sentence,
                level_of(1 - learned, bad_below=0.5, good_from=0.8),
                strongest.key,
            )
        ]

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = [
            [
                r.key,
                r.method,
                str(r.record["n_protected"]),
                f"{r.metrics['linf']:.3f}",
                str(r.metrics["l0_pixels"]),
                pct(r.metrics["clean_accuracy"]),
                pct(r.metrics["accuracy"]),
                r.record["adversarial_recipe"] or "-",
                pct(r.metrics["adv_clean_accuracy"]),
                pct(r.metrics["adv_accuracy"]),
                f"{r.metrics['seconds']:.1f}",
            ]
            for r in results
        ]
        columns = ["scenario", "protection", "images", "L-inf", "pixels changed", "clean-trained acc."]
        table = Table(
            [*columns, "protected-trained acc.", "adversarial recipe", "clean (adv.)", "protected (adv.)", "seconds"],
            rows,
            [False, False, True, True, True, True, True, False, True, True, True],
            caption="Test accuracy of models trained from scratch on the clean and on the protected training set, with "
            "the audited model's recipe and with adversarial training; lower on the protected set is better. "
            "Pixels changed: the most pixel positions one protected image differs in (L0).",
        )
        return Section(
            id="protection",
            title="Data protection",
            intro="Can the owner of the training images keep a model from learning them? Each protection perturbs the "
            "training set the audited model learned from (labels kept), a model is trained from scratch on it, and "
            "its accuracy on clean test images is compared with the same training on the clean set.",
            tables=[table],
            gallery_note="Training images before and after protection, in pairs.",
        )


def _accuracy(target: AuditTarget, model: nn.Module, x: Tensor, y: Tensor) -> float:
    pred = target.victim.like(model).predict(x)
    return float((pred.cpu() == y.cpu()).double().mean())


def _appropriator_best(r: ResultRow) -> float:
    """The best an appropriator did: the higher of the two regimes' accuracies."""
    adv = r.metrics["adv_accuracy"]
    return r.metrics["accuracy"] if adv is None else max(r.metrics["accuracy"], adv)
