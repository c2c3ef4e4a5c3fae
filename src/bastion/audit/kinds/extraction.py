"""The `extraction` kind: steal a copy of the model through its query API and measure the copy.

    - attack: knockoff           # a registered extraction attack (`bastion list attacks`)
      name: knockoff-label       # the scenario's key (default: the attack, -OUTPUT unless probs, +DEFENSE)
      n: 500                     # test images the copy is measured on (never queried)
      output: label              # what the API answers: probs (default), label or top-k (with k)
      k: 3                       # top-k only
      pool: digits               # the attacker's images: digits, ood or heldout (default: see below)
      defenses: [reverse-sigmoid]  # output defenses the API applies (`bastion list defenses`)
      params: {budget: 2000, policy: adaptive}

Pools: `digits`, scikit-learn's 8x8 digits upsampled at seeded sizes and places to the model's input
(`bastion.data.digits.digits_pool`, twice the budget, at least 2,000), another distribution, as the
paper's ImageNet is for Caltech256; `ood`, the training split of the audit's second data set
(`--ood-data`, e.g. CIFAR-100 for a CIFAR-10 model), with its own labels; `heldout`, the test images
after the first `n` (in-distribution images the attacker holds; JBDA's seeds with their true labels).
Defaults: `heldout` for `jbda`; for `knockoff` `digits` on grey images and, on colour images, `ood`
when the audit has a second data set, else `digits` (with a warning: digits are a poor pool for
colour photographs).

The surrogate is a fresh model of the audited model's architecture (so the model must be rebuildable).
Metrics: `fidelity` (label agreement with the model on the test images), `accuracy` (the copy's),
`victim_accuracy`, `queries`, `transfer_success_rate` (PGD-40 crafted on the copy at the usual L-inf
radius, 0.3 grey or 8/255 colour, shown to the model; None with transfer_n=0), `noise_success_rate`
(random +-eps signs, the floor) and `seconds`. See docs/extraction.md and docs/audits.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bastion.attacks.extraction  # noqa: F401  (registers the extraction attacks)
from bastion.attacks.extraction import ExtractionAttack
from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS
from bastion.data.digits import digits_pool
from bastion.defenses.postprocess import build_postprocessors
from bastion.models import CheckpointMeta
from bastion.report import Card, Figure, Section, Table, level_of, pct
from bastion.report.plots import Panel, lines
from bastion.store import ResultRow

__all__ = ["METRICS", "OUTPUTS", "POOLS", "ExtractionKind", "ExtractionSettings"]

METRICS = (
    "fidelity",
    "accuracy",
    "victim_accuracy",
    "queries",
    "transfer_success_rate",
    "noise_success_rate",
    "seconds",
)
OUTPUTS = ("probs", "label", "top-k")
POOLS = ("digits", "ood", "heldout")


@dataclass(frozen=True)
class ExtractionSettings:
    params: dict[str, Any]
    output: str = "probs"
    k: int | None = None
    pool: str | None = None  # None: the attack's default (see the module docstring)
    defenses: tuple[str, ...] = ()


def check_settings(output: str, k: int | None, pool: str | None, defenses: Sequence[str]) -> None:
    """Raise `ConfigError` for an unknown output, pool or defense (the CLI's and the plan's check)."""
    if output not in OUTPUTS:
        raise ConfigError(f"the API's output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    if output == "top-k" and (k is None or k < 1):
        raise ConfigError(f"top-k output needs k >= 1; got {k}")
    if output != "top-k" and k is not None:
        raise ConfigError("k goes with output top-k only")
    if pool is not None and pool not in POOLS:
        raise ConfigError(f"pool must be one of {', '.join(POOLS)}; got {pool!r}")
    build_postprocessors(defenses)


def pool_of(method: str, pool: str | None, target: AuditTarget) -> str:
    """The pool a scenario draws from: the one it names, else the attack's default for this target."""
    if pool is not None:
        return pool
    if method == "jbda":
        return "heldout"
    colour = target.dataset.input_shape[0] > 1
    return "ood" if colour and target.ood_data is not None else "digits"


@register_kind
class ExtractionKind(ScenarioKind):
    name = "extraction"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params", "output", "k", "pool", "defenses")
    title = "Model extraction"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        cls = ATTACKS.get(method)
        params = entry.params(cls)
        entry.construct(cls, **params)
        output = entry.get("output", str, "probs")
        k = entry.get("k", int, None)
        pool = entry.get("pool", str, None)
        defenses = entry.strings("defenses")
        try:
            check_settings(output, k, pool, defenses)
        except ConfigError as e:
            key = "defenses" if "defense" in str(e) else ("pool" if "pool" in str(e) else "output")
            raise entry.error(key, str(e)) from None
        return [("", ExtractionSettings(params=params, output=output, k=k, pool=pool, defenses=defenses))]

    def default_name(self, method: str, settings: Any) -> str:
        st: ExtractionSettings = settings
        out = "" if st.output == "probs" else f"-{st.output if st.k is None else f'top{st.k}'}"
        return "+".join((method + out, *(d.partition(":")[0] for d in st.defenses)))

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        st: ExtractionSettings = scenario.settings
        attack: ExtractionAttack = ATTACKS.get(scenario.method)(**st.params)
        if target.trainer is None:
            raise ConfigError(
                f"scenario {scenario.key!r} trains a copy of the model's architecture and {target.model_name} "
                "cannot be rebuilt (its architecture is unknown)"
            )
        pool = pool_of(scenario.method, st.pool, target)
        n_test = target.dataset.x_test.shape[0]
        if scenario.n >= n_test and pool == "heldout":
            raise ConfigError(
                f"scenario {scenario.key!r} measures on {scenario.n} test images and draws its heldout pool from "
                f"the test images after them, but {target.data} has {n_test}; give a smaller n"
            )
        need = getattr(attack, "seeds", 1)
        if pool == "heldout" and n_test - scenario.n < need:
            raise ConfigError(
                f"scenario {scenario.key!r} needs {need} heldout test images after the first {scenario.n} and "
                f"{target.data} has {n_test - scenario.n}; give a smaller n or params: {{seeds: N}}"
            )
        if pool == "ood" and target.ood_data is None:
            raise ConfigError(f"scenario {scenario.key!r} draws from the second data set: give --ood-data")

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        st: ExtractionSettings = scenario.settings
        attack: ExtractionAttack = ATTACKS.get(scenario.method)(seed=seed, **st.params)
        x, y = target.test(scenario.n)
        pool = pool_of(scenario.method, st.pool, target)
        shape = target.dataset.input_shape
        warnings = []
        if pool == "digits":
            size = max(2 * attack.budget, 2000)
            x_pool, y_pool = digits_pool(shape, size, seed=seed)
            info = {"pool": "digits", "source": "sklearn digits, upsampled at seeded sizes and places", "seed": seed}
            if shape[0] > 1:
                warnings.append(
                    "the transfer pool is grey digits upsampled to colour images: a poor pool for colour "
                    "photographs; give --ood-data (e.g. cifar100 for a CIFAR-10 model) for a natural-image pool"
                )
        elif pool == "ood":
            assert target.ood_data is not None  # checked
            x_pool, y_pool = target.ood_data.x_train, target.ood_data.y_train
            info = {"pool": "ood", "source": f"{target.ood_name} training split"}
        else:
            x_pool, y_pool = target.dataset.x_test[scenario.n :], target.dataset.y_test[scenario.n :]
            info = {"pool": "heldout", "source": f"{target.data} test images {scenario.n} and after"}
        meta = CheckpointMeta.from_dict(target.model_meta, source=target.model_name)
        result = attack.run(
            target.victim,
            meta.build,
            x_pool,
            y_pool,
            x,
            y,
            output=st.output,  # type: ignore[arg-type]
            k=st.k,
            postprocess=build_postprocessors(st.defenses),
            defenses=st.defenses,
            surrogate_info={"architecture": meta.architecture, "init": "fresh, seeded"},
            pool_info=info,
            progress=progress,
        )
        record = result.to_dict()
        transfer = record["transfer"] or {}
        metrics = {k: record[k] for k in ("fidelity", "accuracy", "victim_accuracy", "queries", "seconds")}
        metrics["transfer_success_rate"] = transfer.get("success_rate")
        metrics["noise_success_rate"] = transfer.get("noise_success_rate")
        warnings += list(result.warnings)
        record["warnings"] = warnings
        return ScenarioResult(metrics=metrics, record=record, seconds=result.seconds, warnings=warnings)

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        best = max(results, key=lambda r: (r.metrics["fidelity"], -r.metrics["queries"]))
        m, rec = best.metrics, best.record
        answers = {"probs": "probabilities", "label": "labels only"}.get(rec["output"], rec["output"])
        defended = f" through {', '.join(rec['defenses'])}" if rec["defenses"] else ""
        sentence = (
            f"With {m['queries']:,} queries answering {answers}{defended}, {best.method} trained a copy that gives "
            f"the model's label on {pct(m['fidelity'])} of {rec['n_test']} test images (the copy's accuracy "
            f"{pct(m['accuracy'])}, the model's {pct(m['victim_accuracy'])})"
        )
        if m["transfer_success_rate"] is not None:
            sentence += (
                f"; adversarial examples crafted on the copy fool the model on {pct(m['transfer_success_rate'])} "
                f"of the images it classified correctly (random noise of the same size: "
                f"{pct(m['noise_success_rate'])})"
            )
        sentence += ". " + (
            "Anyone with this many queries can copy the model's behaviour and attack it offline: rate-limit the "
            "API, answer labels rather than scores, and watch for query patterns."
            if m["fidelity"] >= 0.8
            else "The copy is rough at this budget."
        )
        return [
            Card(
                "model extraction",
                m["fidelity"],
                pct(m["fidelity"]),
                f"agreement of a copy made with {m['queries']:,} queries",
                sentence,
                level_of(1 - m["fidelity"], bad_below=0.2, good_from=0.5),
                best.key,
            )
        ]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        return {
            "fidelity": {r.key: [(p["queries"], p["fidelity"]) for p in r.record["curve"]] for r in results},
            "accuracy": {r.key: [(p["queries"], p["accuracy"]) for p in r.record["curve"]] for r in results},
        }

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = [
            [
                r.key,
                r.method,
                r.record["output"],
                ", ".join(r.record["defenses"]) or "–",
                r.record["transfer_set"].get("pool", "–"),
                f"{r.metrics['queries']:,}",
                pct(r.metrics["victim_accuracy"]),
                pct(r.metrics["accuracy"]),
                pct(r.metrics["fidelity"]),
                pct(r.metrics["transfer_success_rate"]),
                pct(r.metrics["noise_success_rate"]),
                f"{r.metrics['seconds']:.1f}",
            ]
            for r in results
        ]
        columns = ["scenario", "attack", "answers", "defenses", "pool", "queries", "model acc.", "copy acc."]
        table = Table(
            [*columns, "fidelity", "transfer success", "noise success", "seconds"],
            rows,
            [False] * 5 + [True] * 7,
            caption="Fidelity: test images on which the copy gives the model's label. Transfer success: PGD-40 "
            "crafted on the copy, shown to the model, over the images the model classified correctly; noise: "
            "random signs of the same radius.",
        )
        series = {k: [(float(q), v) for q, v in pts] for k, pts in curves["fidelity"].items()}
        acc = {k: [(float(q), v) for q, v in pts] for k, pts in curves["accuracy"].items()}
        figure = Figure(
            "extraction-curves",
            "Fidelity and accuracy of the copy against queries",
            "Each point is a copy trained on the answers to the first queries (Knockoff: fresh copies on growing "
            "prefixes; JBDA: the substitute after each round).",
            lines(
                [
                    Panel("queries", "fidelity (%)", series, percent=True),
                    Panel("queries", "copy accuracy (%)", acc, percent=True),
                ]
            ),
        )
        return Section(
            id="extraction",
            title="Model extraction",
            intro="How many queries does it take to copy the model through its API? Each scenario queries the "
            "model as a black box within a total budget, trains a fresh model of the same architecture on the "
            "answers, and measures how often the copy agrees with the model on test images it never queried, "
            "and how well adversarial examples crafted on the copy transfer to the model.",
            tables=[table],
            figures=[figure],
        )
