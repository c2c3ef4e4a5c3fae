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
`random_accuracy` (after as many random flips; None without a baseline), `seconds`. See
docs/audits.md and docs/weights.md.
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
        batch = getattr(attack, "batch_size", 0)
        if attack.needs_attack_images and target.n_members < batch:
            raise ConfigError(
                f"scenario {scenario.key!r} draws an attack batch of {batch} training images and {target.data} has "
                f"{target.n_members}; give params: {{batch_size: N}} with a smaller N"
            )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        st: BitFlipSettings = scenario.settings
        attack: BitFlipAttack = ATTACKS.get(scenario.method)(seed=seed, **st.params)
        x, y = target.test(scenario.n)
        x_attack = target.members(target.n_members)[0] if attack.needs_attack_images else None
        result = attack.run(target.victim, x, y, x_attack=x_attack, progress=progress)
        record = result.to_dict()
        metrics = {k: record[k] for k in ("float_accuracy", "quantized_accuracy", "accuracy", "flips", "seconds")}
        metrics["flips"] = result.hamming
        metrics["random_accuracy"] = None
        record["baseline"] = None
        if st.baseline and result.n_flips:
            random = RandomFlip(max_flips=result.n_flips, seed=seed).run(target.victim, x, y, progress=progress)
            record["baseline"] = random.to_dict()
            metrics["random_accuracy"] = random.final_accuracy
            metrics["seconds"] += random.seconds
        record["seconds"] = metrics["seconds"]
        return ScenarioResult(
            metrics=metrics, record=record, seconds=metrics["seconds"], warnings=list(result.warnings)
        )

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
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
        return [
            Card(
                "bit flips",
                m["accuracy"],
                pct(m["accuracy"]),
                f"accuracy after {m['flips']} weight-bit flips",
                sentence,
                level_of(retained, bad_below=0.5, good_from=0.9),
                worst.key,
            )
        ]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in results:
            out[r.key] = list(enumerate(r.record["accuracy_curve"]))
            if r.record.get("baseline"):
                out[f"{r.key} (random)"] = list(enumerate(r.record["baseline"]["accuracy_curve"]))
        return out

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
        series = {k: [(float(i), a) for i, a in pts] for k, pts in curves.items()}
        figure = Figure(
            "bitflip-accuracy",
            "Accuracy against bit flips",
            "Accuracy of the 8-bit model after each flip, aimed (the attack) and random (the baseline).",
            lines([Panel("bits flipped", "accuracy (%)", series, percent=True, markers=False)]),
        )
        return Section(
            id="bitflip",
            title="Bit flips",
            intro="What can an attacker who flips bits of the weights in memory do? Each scenario quantizes a copy "
            "of the model to 8 bits per layer, as deployed accelerators store it, flips the bits an attack chooses "
            "one at a time, and measures the accuracy after each flip; random flips of as many bits are the "
            "baseline.",
            tables=[table],
            figures=[figure],
        )


def _retained(r: ResultRow) -> float:
    """Share of its 8-bit accuracy the model kept after the attack."""
    q = r.metrics["quantized_accuracy"]
    return r.metrics["accuracy"] / q if q else 1.0
