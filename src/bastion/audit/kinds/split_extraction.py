"""The `split-extraction` kind: a malicious client of split federated learning rebuilds the server's part
of the model from the gradients the server returns (Li et al., arXiv 2303.08581).

    - attack: gm-me            # a registered split-extraction attack (`bastion list attacks`)
      name: sfl-gm-me          # the scenario's key (default: the attack)
      n: 1000                  # test images the surrogate is measured on
      server_layers: 3         # n_s: conv, max-pool and linear layers on the server, counted from the
                               # output (3 cuts small_cnn after conv2)
      own: 0.1                 # the attacker's labelled share of the training split (train-me, softtrain-me)
      aux: digits              # gm-me's unlabelled images: digits, uniform, gaussian (made here) or train
                               # (training images beyond the attacker's share, labels dropped)
      aux_n: 2000              # how many auxiliary images
      params: {budget: 2000, epochs: 20}

The audited model is deployed as the offline SFL victim of the paper: cut after its first L - n_s
layers, C goes to the clients (the attacker holds it), S stays on a server that answers nothing but
`dCE(S(z), y)/dz` per row (`SplitOracle`; the model and its file are not changed). Metrics:
`accuracy` (of Ŝ∘C on the test images), `fidelity` (label agreement with the model), `victim_accuracy`,
`gap`, `random_accuracy` (an untrained Ŝ), `queries` (gradient rows, the oracle's count), `seconds`.
See docs/split-learning.md and docs/audits.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from bastion.attacks.extraction.sfl import SplitExtractionAttack, SplitModel, split_model
from bastion.audit.kinds.base import Scenario, ScenarioKind, ScenarioResult, register_kind
from bastion.audit.schema import Entry
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError, ModelError
from bastion.core.progress import ProgressFn
from bastion.core.registry import ATTACKS
from bastion.data.ood import synthetic_set
from bastion.report import Card, Figure, Section, Table, level_of, pct
from bastion.report.plots import Panel, lines
from bastion.store import ResultRow

__all__ = ["AUX_SOURCES", "METRICS", "SplitExtractionKind", "SplitExtractionSettings", "deploy"]

METRICS = ("accuracy", "fidelity", "victim_accuracy", "gap", "random_accuracy", "queries", "seconds")
AUX_SOURCES = ("digits", "uniform", "gaussian", "train")


@dataclass(frozen=True)
class SplitExtractionSettings:
    params: dict[str, Any]
    server_layers: int = 3
    own: float = 0.1
    aux: str = "digits"
    aux_n: int = 2000


def deploy(target: AuditTarget, server_layers: int) -> SplitModel:
    """The audited model cut for SFL, on a copy (the audit never changes the model)."""
    shape = target.victim.input_shape
    if shape is None:
        raise ConfigError("split extraction needs the model's input shape")
    try:
        return split_model(copy.deepcopy(target.victim.model), server_layers, shape)
    except ModelError as err:
        raise ConfigError(f"{target.model_name} cannot be split for SFL: {err}") from None


def attacker_data(target: AuditTarget, st: SplitExtractionSettings, seed: int) -> dict[str, Tensor]:
    """The attacker's labelled share of the training split, and its unlabelled auxiliary images."""
    n_own = max(1, round(st.own * target.n_members))
    x, y = target.members(target.n_members)
    if st.aux == "train":
        aux = x[n_own : n_own + st.aux_n]
    else:
        aux = synthetic_set(st.aux, target.dataset.x_test, st.aux_n, seed)
    return {"x_own": x[:n_own], "y_own": y[:n_own], "x_aux": aux}


@register_kind
class SplitExtractionKind(ScenarioKind):
    name = "split-extraction"
    method_field = "attack"
    registry = ATTACKS
    fields = ("params", "server_layers", "own", "aux", "aux_n")
    title = "Model extraction in split learning"

    def settings(self, entry: Entry, method: str) -> list[tuple[str, Any]]:
        cls = ATTACKS.get(method)
        params = entry.params(cls)
        entry.construct(cls, **params)
        own = entry.raw("own", 0.1)
        if isinstance(own, bool) or not isinstance(own, int | float) or not 0 < own <= 1:
            raise entry.error("own", f"own must be a share of the training split in (0, 1]; got {own}")
        aux = entry.get("aux", str, "digits")
        if aux not in AUX_SOURCES:
            raise entry.error("aux", f"aux must be one of {', '.join(AUX_SOURCES)}; got {aux!r}")
        st = SplitExtractionSettings(
            params=params,
            server_layers=entry.positive_int("server_layers", 3),
            own=float(own),
            aux=aux,
            aux_n=entry.positive_int("aux_n", 2000),
        )
        return [("", st)]

    def check(self, scenario: Scenario, target: AuditTarget) -> None:
        st: SplitExtractionSettings = scenario.settings
        deploy(target, st.server_layers)
        if st.aux == "train" and round(st.own * target.n_members) >= target.n_members:
            raise ConfigError(f"scenario {scenario.key!r}: aux: train needs training images beyond the attacker's own")

    def run(self, scenario: Scenario, target: AuditTarget, *, seed: int, progress: ProgressFn | None) -> ScenarioResult:
        st: SplitExtractionSettings = scenario.settings
        attack: SplitExtractionAttack = ATTACKS.get(scenario.method)(seed=seed, **st.params)
        split = deploy(target, st.server_layers)
        x, y = target.test(scenario.n)
        data = attacker_data(target, st, seed)
        result = attack.run(split, x, y, progress=progress, **data)
        record = result.to_dict()
        record["attacker"] = {
            "own": int(data["x_own"].shape[0]) if attack.needs == "own" else 0,
            "aux": st.aux if attack.needs == "aux" else None,
            "aux_n": int(data["x_aux"].shape[0]) if attack.needs == "aux" else 0,
        }
        return ScenarioResult(
            metrics={k: record[k] for k in METRICS},
            record=record,
            seconds=result.seconds,
            warnings=list(result.warnings),
        )

    # --- presentation ----------------------------------------------------------------------------
    def cards(self, results: Sequence[ResultRow]) -> list[Card]:
        best = max(results, key=lambda r: r.metrics["fidelity"])
        m, rec = best.metrics, best.record
        queries = f"{m['queries']:,} gradient queries" if m["queries"] else "no query at all"
        sentence = (
            f"A client of split learning that holds the client-side model rebuilt the server's last "
            f"{rec['server_layers']} layers with {best.method} and {queries}: the copy agrees with the model on "
            f"{pct(m['fidelity'])} of test images and scores {pct(m['accuracy'])} "
            f"(the model {pct(m['victim_accuracy'])}, an untrained copy {pct(m['random_accuracy'])}). "
        )
        sentence += (
            "Splitting the model does not keep its server part private from the clients: keep more layers on the "
            "server, or do not hand the client-side model to untrusted clients."
            if m["fidelity"] >= 0.5
            else "Under this budget the server part stayed out of reach."
        )
        return [
            Card(
                "split-learning extraction",
                m["fidelity"],
                pct(m["fidelity"]),
                "agreement of the stolen copy with the model",
                sentence,
                level_of(1 - m["fidelity"], bad_below=0.2, good_from=0.5),
                best.key,
            )
        ]

    def curves(self, results: Sequence[ResultRow]) -> dict[str, Any]:
        out: dict[str, list[tuple[float, float]]] = {}
        for r in results:
            out.setdefault(r.method, []).append((float(r.record["budget"] or 0), float(r.metrics["fidelity"])))
        return {"fidelity": {k: sorted(v) for k, v in out.items()}}

    def section(self, results: Sequence[ResultRow], curves: dict[str, Any]) -> Section:
        rows = [
            [
                r.key,
                r.method,
                str(r.record["server_layers"]),
                f"{r.record['budget']:,}" if r.record["budget"] is not None else "–",
                f"{r.metrics['queries']:,}",
                r.record["transfer_source"],
                pct(r.metrics["accuracy"]),
                pct(r.metrics["fidelity"]),
                pct(r.metrics["victim_accuracy"]),
                pct(r.metrics["random_accuracy"]),
                f"{r.metrics['seconds']:.1f}",
            ]
            for r in results
        ]
        table = Table(
            [
                "scenario",
                "attack",
                "server layers",
                "budget",
                "queries",
                "attacker's data",
                "copy acc.",
                "fidelity",
                "model acc.",
                "untrained copy acc.",
                "seconds",
            ],
            rows,
            [False, False, True, True, True, False, True, True, True, True, True],
            caption="Measured on test images the attacker never saw. Fidelity: share of them on which the copy "
            "(the attacker's top on the real client-side model) gives the model's label. Queries: gradient rows the "
            "server answered, counted by the oracle. The untrained copy is the attacker's starting point.",
        )
        panel = Panel("gradient-query budget", "fidelity (%)", curves["fidelity"], percent=True)
        figure = Figure(
            "split-extraction-fidelity",
            "Fidelity of the stolen server part against the budget",
            "Label agreement of each attack's copy with the model, per budget.",
            lines([panel]),
        )
        return Section(
            id="split-extraction",
            title=self.title,
            intro="In split federated learning the clients run the first layers of the model and a server runs the "
            "rest, returning only the gradient of its loss. Can a malicious client rebuild the server's part? Each "
            "scenario cuts the model, gives the attacker the client-side model and a budget of gradient queries (and "
            "its own data where the attack uses it), and measures the copy it trains.",
            tables=[table],
            figures=[figure],
        )
