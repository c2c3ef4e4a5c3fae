"""The `backdoor` kind: poison the model's training set, train a model like it, measure the backdoor.

    - attack: badnets          # a registered poisoning attack (`bastion list attacks`)
      name: badnets-5pct       # the scenario's key (default: the attack)
      n: 1000                  # test images measured (clean accuracy, and the trigger's success)
      params: {rate: 0.05, target: 0}

The training set is the one the audited model trained on (its `train_n` first training images); the
poisoned model trains with the audited model's own architecture and recipe (`AuditTarget.train_fresh`)
and is kept as a checkpoint beside the run, so a resumed audit does not train it again. Metrics:
`clean_accuracy` of the poisoned model, its `asr` and `asr_over_correct`, the `clean_drop` from the
audited model's accuracy, `clean_model_asr` (the trigger on the audited model: what it does without a
backdoor), `seconds`. See docs/audits.md.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import torch

from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, method_params, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS
from bastion.core.victim import Victim
from bastion.report import Card, Section, Table, level_of, pct
from bastion.report.images import strip
from bastion.store import Artifact, ResultRow

__all__ = ["METRICS", "BackdoorKind"]

METRICS = ("clean_accuracy", "asr", "asr_over_correct", "clean_drop", "clean_model_asr", "seconds")


@register_kind
class BackdoorKind(ScenarioKind):
    name = "backdoor"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params",)
    title = "Backdoors"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        return method_params(entry, ATTACKS.get(method))

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        if target.trainer is None:
            raise ConfigError(
                f"scenario {scenario.key!r} trains a poisoned copy of the model, and {target.model_name} cannot be "
                "retrained: its architecture or recipe is unknown"
            )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        start = time.perf_counter()
        attack = ATTACKS.get(scenario.method)(seed=seed, **scenario.settings.params)
        k = target.victim.num_classes
        x_train, y_train = target.members(target.n_members)
        poisoned = attack.poison(x_train, y_train, k)
        key = _model_key(target, scenario, seed)
        model = target.train_fresh(
            poisoned.x, poisoned.y, seed=seed, progress=progress, cache_key=key, batch=poisoned.batch
        )
        victim = Victim(model, input_shape=target.victim.input_shape, num_classes=k, device=target.victim.device)
        x, y = target.test(scenario.n)
        result = attack.evaluate(victim, x, y, poisoned, seconds=time.perf_counter() - start)
        on_clean = attack.evaluate(target.victim, x, y, poisoned, seconds=0.0)
        record = result.to_dict()
        record["clean_model"] = {"clean_accuracy": on_clean.clean_accuracy, "asr": on_clean.asr}
        record["model_key"] = key
        metrics = {k_: record[k_] for k_ in ("clean_accuracy", "asr", "asr_over_correct", "seconds")}
        metrics["clean_drop"] = on_clean.clean_accuracy - result.clean_accuracy
        metrics["clean_model_asr"] = on_clean.asr
        shown, edited = poisoned.index[:4], poisoned.x[poisoned.index[:4]]
        if not shown.numel():  # a training-control attack poisons batches, not the set: show its trigger
            shown = torch.arange(min(4, y_train.numel()))
            edited = attack.apply_trigger(x_train[shown]).clamp(0, 1)
        images = [img for i, after in zip(shown, edited, strict=True) for img in (x_train[i], after)]
        labels = attack.target_labels(y_train[shown], k).tolist()
        caption = f"clean | poisoned training image, in pairs; labelled {labels}"
        artifact = Artifact(name="poisoned.png", mime="image/png", data=strip(images), caption=caption)
        return ScenarioResult(metrics=metrics, record=record, seconds=result.seconds, artifacts=[artifact])

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
        return {}

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
        return Section(
            id="backdoor",
            title="Backdoors",
            intro="What can an attacker who edits part of the training set do? Each attack poisons the training "
            "images the audited model learned from, a model is trained on them with the same recipe, and its "
            "clean accuracy and the trigger's success rate are measured on the test images.",
            tables=[table],
            figures=[],
            gallery_note="Training images before and after poisoning, in pairs.",
        )


def _points(drop: float) -> str:
    """A loss of accuracy as signed points: 0.012 lost -> "-1.2 points"."""
    return f"{-drop * 100:+.1f} points"


def _model_key(target: AuditTarget, scenario: Scenario, seed: int) -> str:
    """Names the poisoned model: the audited model, its data, the scenario and the seed."""
    key = {"model": target.model_sha256, "data": target.data, "spec": scenario.spec(), "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{scenario.key}-{digest}"
