"""The `bitflip` kind: flip bits of an 8-bit copy of the model's weights and measure what is left.

    - attack: bfa              # a registered bit-flip attack (`bastion list attacks`)
      name: bfa                # the scenario's key (default: the attack)
      n: 500                   # test images the accuracy is measured on after every flip
      params: {max_flips: 50}
      baseline: true           # also flip as many random bits (default: true; not for random-flip)

The model is quantized per layer to 8 bits on a copy (the audited model is never changed); an attack
that needs images draws its attack batch from the training split, never from the measured test
images. Metrics: `float_accuracy` (the model as it is), `quantized_accuracy` (8-bit, before any
flip), `accuracy` (after the attack), `flips` (Hamming distance to the original weights),
`random_accuracy` (after as many random flips; None without a baseline), `seconds`; a targeted
attack (`t-bfa`) adds `asr` (its success rate) and, sending one class, `other_accuracy` (accuracy on
the other classes). See docs/audits.md and docs/weights.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bastion.attacks.weights import BitFlipAttack, RandomFlip
from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, method_params, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS
from bastion.report import Card, Figure, Section, Table, level_of, pct
from bastion.report.plots import Panel, lines
from bastion.store import ResultRow

__all__ = ["METRICS", "BitFlipKind", "BitFlipSettings"]

METRICS = ("float_accuracy", "quantized_accuracy", "accuracy", "flips", "random_accuracy", "seconds")
RANDOM = "random-flip"


@dataclass(frozen=True)
class BitFlipSettings:
    params: dict[str, Any]
    baseline: bool = True


@register_kind
class BitFlipKind(ScenarioKind):
    name = "bitflip"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params", "baseline")
    title = "Bit flips"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        ((_, checked),) = method_params(entry, ATTACKS.get(method))
        baseline = entry.get("baseline", bool, True)
        return [("", BitFlipSettings(params=checked.params, baseline=baseline and method != RANDOM))]

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        attack: BitFlipAttack = ATTACKS.get(scenario.method)(**scenario.settings.params)
        batch = getattr(attack, "batch_size", None) or 0  # t-bfa: none takes what there is
        if attack.needs_attack_images and target.n_members < batch:
            raise ConfigError(
                f"scenario {scenario.key!r} draws an attack batch of {batch} training images and {target.data} has "
                f"{target.n_members}; give params: {{batch_size: N}} with a smaller N"
            )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        st: BitFlipSettings = scenario.settings
        attack: BitFlipAttack = ATTACKS.get(scenario.method)(seed=seed, **st.params)
        x, y = target.test(scenario.n)
        x_attack, y_attack = target.members(target.n_members) if attack.needs_attack_images else (None, None)
        result = attack.run(target.victim, x, y, x_attack=x_attack, y_attack=y_attack, progress=progress)
        record = result.to_dict()
        metrics = {k: record[k] for k in ("float_accuracy", "quantized_accuracy", "accuracy", "flips", "seconds")}
        metrics["flips"] = result.hamming
        metrics.update({k: record[k] for k in result.curves})  # a targeted attack's asr, other_accuracy
        metrics["random_accuracy"] = None
        record["baseline"] = None
        if st.baseline and result.n_flips:
            baseline = RandomFlip(max_flips=result.n_flips, seed=seed, quantization=attack.quantization)
            random = baseline.run(target.victim, x, y, progress=progress)
            record["baseline"] = random.to_dict()
            metrics["random_accuracy"] = random.final_accuracy
            metrics["seconds"] += random.seconds
        record["seconds"] = metrics["seconds"]
        return ScenarioResult(
            metrics=metrics, record=record, seconds=metrics["seconds"], warnings=list(result.warnings)
        )

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        cards = []
        untargeted = [r for r in results if "asr" not in r.metrics]
        if untargeted:
            cards.append(self._accuracy_card(untargeted))
        targeted = [r for r in results if "asr" in r.metrics]
        if targeted:
            cards.append(_targeted_card(targeted))
        return cards

    def _accuracy_card(self, results: Sequence[ResultRow]) -> Card:
        aimed = [r for r in results if r.method != RANDOM] or list(results)
        worst = min(aimed, key=_retained)
        m, rec = worst.metrics, worst.record
        retained = _retained(worst)
        sentence = (
            f"Flipping {m['flips']} of the {rec['bits_total']:,} bits of the model's 8-bit weights with "
            f"{worst.method} takes its accuracy from {pct(m['quantized_accuracy'])} to {pct(m['accuracy'])}"
        )
        if m["random_accuracy"] is not None:
            sentence += f"; as many random flips leave it at {pct(m['random_accuracy'])}"
        sentence += ". " + (
            "Whoever can flip bits in the memory that holds the weights (row-hammer, fault injection) can break "
            "the model with a handful of aimed faults: guard that memory and check the weights' integrity."
            if retained < 0.5
            else "The model kept most of its accuracy under this budget of flips."
        )
        return Card(
            "bit flips",
            m["accuracy"],
            pct(m["accuracy"]),
            f"accuracy after {m['flips']} weight-bit flips",
            sentence,
            level_of(retained, bad_below=0.5, good_from=0.9),
            worst.key,
        )

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        accuracy: dict[str, Any] = {}
        success: dict[str, Any] = {}
        for r in results:
            accuracy[r.key] = list(enumerate(r.record["accuracy_curve"]))
            if r.record.get("baseline"):
                accuracy[f"{r.key} (random)"] = list(enumerate(r.record["baseline"]["accuracy_curve"]))
            if "asr" in r.record["curves"]:
                success[r.key] = list(enumerate(r.record["curves"]["asr"]))
        return {"accuracy": accuracy, "success": success}

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = [
            [
                r.key,
                r.method,
                str(r.record["n_eval"]),
                pct(r.metrics["float_accuracy"]),
                pct(r.metrics["quantized_accuracy"]),
                str(r.metrics["flips"]),
                f"{r.record['bits_total']:,}",
                pct(r.metrics["accuracy"]),
                pct(r.metrics["random_accuracy"]),
                r.record["stop"].replace("_", " "),
                f"{r.metrics['seconds']:.1f}",
            ]
            for r in results
        ]
        columns = ["scenario", "attack", "images", "float acc.", "8-bit acc.", "flips", "weight bits"]
        table = Table(
            [*columns, "acc. after", "acc. after random flips", "stopped at", "seconds"],
            rows,
            [False, False] + [True] * 7 + [False, True],
            caption="Accuracy on test images the attack never saw. Flips: bits that differ from the original 8-bit "
            "weights (the Hamming distance). Random flips: as many bits drawn uniformly among all weight bits.",
        )
        tables = [table]
        targeted = [r for r in results if "asr" in r.metrics]
        if targeted:
            tables.append(
                Table(
                    ["scenario", "mode", "source", "target", "flips", "success", "acc. on the other classes"],
                    [
                        [
                            r.key,
                            r.record["params"]["mode"],
                            "all" if r.record["params"]["source"] is None else str(r.record["params"]["source"]),
                            str(r.record["params"]["target"]),
                            str(r.metrics["flips"]),
                            pct(r.metrics["asr"]),
                            pct(r.metrics.get("other_accuracy")),
                        ]
                        for r in targeted
                    ],
                    [False, False, True, True, True, True, True],
                    caption="Success: test images sent to the target class (n-to-1: all of them, the target's own "
                    "included, as the T-BFA paper counts; otherwise those of the source class).",
                )
            )
        panels = [Panel("bits flipped", "accuracy (%)", _series(curves["accuracy"]), percent=True, markers=False)]
        if curves["success"]:
            panels.append(Panel("bits flipped", "success (%)", _series(curves["success"]), percent=True, markers=False))
        figure = Figure(
            "bitflip-accuracy",
            "Accuracy against bit flips",
            "Accuracy of the 8-bit model after each flip, aimed (the attack) and random (the baseline); a targeted "
            "attack's success rate beside it.",
            lines(panels),
        )
        return Section(
            id="bitflip",
            title="Bit flips",
            intro="What can an attacker who flips bits of the weights in memory do? Each scenario quantizes a copy "
            "of the model to 8 bits per layer, as deployed accelerators store it, flips the bits an attack chooses "
            "one at a time, and measures the accuracy after each flip; random flips of as many bits are the "
            "baseline.",
            tables=tables,
            figures=[figure],
        )


def _series(curves: dict[str, Any]) -> dict[str, list[tuple[float, float | None]]]:
    return {k: [(float(i), a) for i, a in pts] for k, pts in curves.items()}


def _targeted_card(results: Sequence[ResultRow]) -> Card:
    """The targeted attack that did most: its success rate, flips and what it left of the rest."""
    best = max(results, key=lambda r: r.metrics["asr"])
    m, params = best.metrics, best.record["params"]
    what = "every test image" if params["source"] is None else f"the test images of class {params['source']}"
    sentence = f"Flipping {m['flips']} weight bits sends {pct(m['asr'])} of {what} to class {params['target']}"
    if m.get("other_accuracy") is not None:
        sentence += f", while the other classes keep {pct(m['other_accuracy'])} accuracy"
    sentence += ". " + (
        "An attacker who can flip bits in memory can plant a targeted misclassification: guard the memory that "
        "holds the weights and check their integrity."
        if m["asr"] >= 0.5
        else "The targeted attack did not take hold within this budget."
    )
    return Card(
        "targeted bit flips",
        m["asr"],
        pct(m["asr"]),
        f"images sent to the target with {m['flips']} flips",
        sentence,
        level_of(1 - m["asr"], bad_below=0.5, good_from=0.9),
        best.key,
    )


def _retained(r: ResultRow) -> float:
    """Share of its 8-bit accuracy the model kept after the attack."""
    q = r.metrics["quantized_accuracy"]
    return r.metrics["accuracy"] / q if q else 1.0
