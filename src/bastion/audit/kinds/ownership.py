"""The `ownership` kind: embed the owner's mark (or fit dataset inference), derive suspects from the
marked model as a thief would, and test every suspect for ownership.

    - ownership: watermark     # a registered ownership method (`bastion list defenses`)
      name: watermark          # the scenario's key (default: the method)
      n: 1000                  # test images used (first half: evaluation and public points; second
                               # half: the thief's own data)
      params: {n: 100}
      finetune_epochs: 2       # FTAL epochs of the fine-tuned suspect (default 2)
      prune: 0.5               # share of weights the pruned suspect loses (default 0.5)
      fit_points: 200          # dataset inference: private and public points the regressor fits on
      test_points: 100         # dataset inference: private and public points each suspect is tested on

Suspect models: `marked` (watermark: a model trained like the audited one with the key in every batch;
blackmarks: a copy of the audited model fine-tuned with its keys; dataset inference: the audited model
itself, the source), `finetuned` (the marked model fine-tuned, all layers, on the thief's data),
`pruned` (global magnitude pruning of the marked model), `independent` (a model with the audited
model's architecture and recipe trained on the thief's data alone) and, for dataset inference,
`distilled` (the same, trained on the thief's data labelled by the source model through label queries).
Trained models are kept as checkpoints beside the run.

Metrics: `p_SUSPECT` per suspect, `ber_SUSPECT` for blackmarks, `clean_accuracy` of the marked model,
`clean_drop` (the audited model's accuracy less the marked model's: the cost of embedding; 0 for
dataset inference), `seconds`. See docs/audits.md and docs/ownership.md.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.core.registry import DEFENSES
from bastion.core.results import OwnershipResult
from bastion.core.victim import Victim
from bastion.defenses.ownership import BlackMarks, DatasetInference, OwnershipMethod, Watermark
from bastion.report import Card, Section, Table, pct
from bastion.store import ResultRow
from bastion.train.surgery import fine_tune, prune_global

__all__ = ["METRICS", "SUSPECTS", "OwnershipKind", "OwnershipSettings"]

SUSPECTS = ("marked", "finetuned", "pruned", "independent", "distilled")
METRICS = ("clean_accuracy", "clean_drop", "seconds", *(f"p_{s}" for s in SUSPECTS))
SHOWN = {"marked": "marked", "finetuned": "fine-tuned (FTAL)", "pruned": "pruned", "independent": "independent"}


@dataclass(frozen=True)
class OwnershipSettings:
    params: dict[str, Any]
    finetune_epochs: int = 2
    prune: float = 0.5
    fit_points: int = 200
    test_points: int = 100


@register_kind
class OwnershipKind(ScenarioKind):
    name = "ownership"
    method_field = "ownership"
    registry = DEFENSES
    fields = ("params", "finetune_epochs", "prune", "fit_points", "test_points")
    title = "Ownership"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        cls = DEFENSES.get(method)
        params = entry.params(cls)
        entry.construct(cls, **params)  # the method checks its own parameters
        prune = entry.get("prune", float, 0.5)
        if not 0.0 <= prune < 1.0:
            raise entry.error("prune", f"`prune` must lie in [0, 1); got {prune}")
        settings = OwnershipSettings(
            params=params,
            finetune_epochs=entry.positive_int("finetune_epochs", 2),
            prune=prune,
            fit_points=entry.positive_int("fit_points", 200),
            test_points=entry.positive_int("test_points", 100),
        )
        return [("", settings)]

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        if target.trainer is None:
            raise ConfigError(
                f"scenario {scenario.key!r} trains marked and independent models, and {target.model_name} cannot be "
                "retrained: its architecture or recipe is unknown"
            )
        n_test = min(scenario.n, target.dataset.x_test.shape[0])
        if n_test < 20:
            raise ConfigError(f"scenario {scenario.key!r} needs at least 20 test images; it has {n_test}")
        if scenario.method == "dataset-inference":
            st: OwnershipSettings = scenario.settings
            need = st.fit_points + st.test_points
            if need > n_test // 2 or need > target.n_members:
                raise ConfigError(
                    f"scenario {scenario.key!r} needs fit_points + test_points = {need} private (training) and public "
                    f"(test) points; it has {target.n_members} and {n_test // 2} (half the {n_test} test images): "
                    "lower them or raise `n`"
                )

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        start = time.perf_counter()
        st: OwnershipSettings = scenario.settings
        method: OwnershipMethod = DEFENSES.get(scenario.method)(seed=seed, **st.params)
        owner = target.victim
        k = owner.num_classes
        n_test = min(scenario.n, target.dataset.x_test.shape[0])
        x_t, y_t = target.test(n_test)
        half = n_test // 2
        x_eval, y_eval = x_t[:half], y_t[:half]  # evaluation and public points
        x_thief, y_thief = x_t[half:], y_t[half:]  # the thief's own data
        x_mem, y_mem = target.members(target.n_members)
        key = _model_key(target, scenario, seed)
        independent = target.train_fresh(
            x_thief, y_thief, seed=seed + 1, progress=progress, cache_key=f"{key}-independent"
        )
        models: dict[str, nn.Module] = {}
        record: dict[str, Any] = {}
        if isinstance(method, Watermark):
            shape = tuple(target.dataset.x_test.shape[1:])
            wm_key = method.make_key(shape, k, x_pool=x_eval, y_pool=y_eval)  # type: ignore[arg-type]
            models["marked"] = target.train_fresh(
                x_mem, y_mem, seed=seed, progress=progress, cache_key=f"{key}-marked", batch=method.batch_edit(wm_key)
            )
            if wm_key.kind == "patch":  # the audited model never saw the key: it sets the null rate
                wm_key = method.calibrate(wm_key, [owner])
            record["key"] = wm_key.to_dict()

            def verify(v: Victim) -> OwnershipResult:
                return method.verify(v, wm_key, x_test=x_eval, y_test=y_eval)

        elif isinstance(method, BlackMarks):
            bits = method.encode(owner, x_mem, y_mem)
            bm_key = method.make_key(owner, x_mem, y_mem, bits)
            models["marked"], _ = method.embed(owner.model, x_mem, y_mem, bm_key)
            record["key"] = bm_key.to_dict()

            def verify(v: Victim) -> OwnershipResult:
                return method.verify(v, bm_key, x_test=x_eval, y_test=y_eval)

        elif isinstance(method, DatasetInference):
            f, t = st.fit_points, st.test_points
            state = method.fit(owner, x_mem[:f], y_mem[:f], x_eval[:f], y_eval[:f])
            models["marked"] = owner.model
            copied = owner.predict(x_thief).cpu()  # one label query per image of the thief's
            models["distilled"] = target.train_fresh(
                x_thief, copied, seed=seed + 2, progress=progress, cache_key=f"{key}-distilled"
            )
            record["fit"] = {"points": f, "gap": state.fit_gap}

            def verify(v: Victim) -> OwnershipResult:
                return method.verify(
                    v,
                    state,
                    x_mem[f : f + t],
                    y_mem[f : f + t],
                    x_eval[f : f + t],
                    y_eval[f : f + t],
                    x_test=x_eval,
                    y_test=y_eval,
                )

        else:  # pragma: no cover - a new ownership method must say how it embeds
            raise ConfigError(f"the ownership kind does not know how to run {scenario.method!r}")
        models["finetuned"], _ = fine_tune(
            models["marked"], x_thief, y_thief, mode="ftal", epochs=st.finetune_epochs, seed=seed
        )
        models["pruned"], _ = prune_global(models["marked"], st.prune)
        models["independent"] = independent
        suspects: dict[str, Any] = {}
        metrics: dict[str, float | int | None] = {}
        for name in SUSPECTS:
            if name not in models:
                continue
            res = verify(owner.like(models[name]))
            suspects[name] = res.to_dict()
            metrics[f"p_{name}"] = res.p_value
            if res.ber is not None:
                metrics[f"ber_{name}"] = res.ber
        clean_owner = float((owner.predict(x_eval).cpu() == y_eval).double().mean())
        metrics["clean_accuracy"] = suspects["marked"]["clean_accuracy"]
        metrics["clean_drop"] = clean_owner - suspects["marked"]["clean_accuracy"]
        metrics["seconds"] = time.perf_counter() - start
        record.update(
            {
                "method": scenario.method,
                "params": method.params(),
                "alpha": method.alpha,
                "n_eval": int(y_eval.numel()),
                "n_thief": int(y_thief.numel()),
                "finetune_epochs": st.finetune_epochs,
                "prune": st.prune,
                "audited_clean_accuracy": clean_owner,
                "model_key": key,
                "suspects": suspects,
                "seconds": metrics["seconds"],
            }
        )
        return ScenarioResult(metrics=metrics, record=record, seconds=metrics["seconds"])

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        return [_card(r) for r in results]

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = []
        for r in results:
            for name, s in r.record["suspects"].items():
                rows.append(
                    [
                        r.key,
                        r.method,
                        SHOWN.get(name, name),
                        f"{s['statistic']:.3g}" if s["statistic"] is not None else "–",
                        _p(s["p_value"]),
                        "yes" if s["claimed"] else "no",
                        "–" if s["ber"] is None else f"{s['ber']:.3f}",
                        pct(s["clean_accuracy"]),
                        str(s["queries"]),
                    ]
                )
        table = Table(
            ["scenario", "method", "suspect", "statistic", "p-value", "claimed", "BER", "clean acc.", "queries"],
            rows,
            [False, False, False, True, True, False, True, True, True],
            caption="p-value: the chance that a model independent of the owner's gives evidence this strong; "
            "ownership is claimed below the method's alpha (0.01 by default). Statistic: key agreement (watermark), "
            "signature bits returned (blackmarks), Welch t of the regressor's scores (dataset inference). Fine-tuned: "
            "all layers on the thief's data; pruned: global magnitude pruning; independent: trained on the thief's "
            "data alone; distilled: trained on the thief's data labelled by the source model.",
        )
        return Section(
            id="ownership",
            title="Ownership",
            intro="Can the owner prove that a suspect model was taken from this one? Each scenario marks the "
            "model (a backdoor watermark, a BlackMarks signature) or fits dataset inference on it, makes the suspects "
            "a thief would hold (the marked model, fine-tuned, pruned) and an independent model as the control, and "
            "tests each suspect through its labels. A sound check claims the derived models and never the "
            "independent one.",
            tables=[table],
        )


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 1e-300" if p == 0 else (f"{p:.2g}" if p < 0.01 else f"{p:.3f}")


def _card(r: ResultRow) -> Card:
    m = r.metrics
    alpha = r.record["alpha"]
    claimed = {name: s["claimed"] for name, s in r.record["suspects"].items()}
    derived = [s for s in ("marked", "finetuned", "pruned", "distilled") if s in claimed]
    kept = [s for s in derived if claimed[s]]
    false_claim = claimed.get("independent", False)
    what = {"watermark": "The watermark", "blackmarks": "The BlackMarks signature"}.get(r.method, "Dataset inference")
    sentence = (
        f"{what} {'identifies' if claimed.get('marked') else 'does not identify'} the marked model "
        f"(p = {_p(m.get('p_marked'))}) and {len(kept)} of the {len(derived)} models derived from it at p < {alpha}; "
        f"the independent model gets p = {_p(m.get('p_independent'))}."
    )
    if r.method != "dataset-inference" and m["clean_drop"] is not None:
        sentence += f" Embedding cost {100 * m['clean_drop']:.1f} points of clean accuracy."
    if false_claim:
        sentence += " The check also claims a model it should not: its p-values cannot be trusted here."
        level = "bad"
    elif not claimed.get("marked"):
        level = "bad"
    else:
        level = "good" if len(kept) == len(derived) else "warn"
    p_ft = m.get("p_finetuned")
    return Card(
        f"ownership: {r.method}",
        p_ft,
        _p(p_ft),
        "p-value of the fine-tuned copy",
        sentence,
        level,  # type: ignore[arg-type]
        r.key,
    )


def _model_key(target: AuditTarget, scenario: Scenario, seed: int) -> str:
    """Names the models a scenario trains: the audited model, its data, the scenario and the seed."""
    key = {"model": target.model_sha256, "data": target.data, "spec": scenario.spec(), "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"{scenario.key}-{digest}"
