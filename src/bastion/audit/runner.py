"""The audit runner: apply a plan to a model, one scenario at a time, committing each to the store.

A run is identified by what makes two invocations the same audit (model hash, data set, split, plan
text, seed). Started again after a crash or a kill, the runner finds the unfinished run with that
identity and does only the scenarios it has not stored yet; a scenario's result and its images are
one transaction, so a kill mid-scenario leaves nothing of it behind.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

import bastion
from bastion.attacks.evasion.checks import sanity_checks
from bastion.audit.plan import Plan, Scenario
from bastion.core.progress import ProgressFn
from bastion.core.random import random_targets
from bastion.core.results import AttackResult
from bastion.core.victim import Victim
from bastion.data import Dataset
from bastion.report.images import triptych
from bastion.report.summary import METRICS
from bastion.store import Artifact, RunSpec, Store

__all__ = ["AuditOutcome", "AuditTarget", "ScenarioEvent", "run_audit"]

GALLERY = 4  # adversarial examples kept per scenario


@dataclass(frozen=True)
class AuditTarget:
    """The model under audit and the data it is audited on.

    Attributes:
        victim: the model.
        dataset: the data set (the audit uses the first samples of its test split).
        data: the data-set spec as given (`mnist5k`, `cifar10:/data`, ...).
        split_seed: the seed of the train/test split.
        model_name: how the model is shown (checkpoint file name, or the factory).
        model_sha256: SHA-256 of the checkpoint (or weights) file: the model's identity in the store.
        model_meta: what the checkpoint says about the model (architecture, recipe, accuracy ...).
    """

    victim: Victim
    dataset: Dataset
    data: str
    split_seed: int
    model_name: str
    model_sha256: str
    model_meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioEvent:
    """What the runner tells its listener: scenario `index` (1-based) of `total` is skipped, starts or is done."""

    index: int
    total: int
    scenario: Scenario
    state: Literal["skipped", "started", "done"]
    seconds: float = 0.0


@dataclass(frozen=True)
class AuditOutcome:
    run_id: int
    resumed: bool
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float


def _identity(target: AuditTarget, plan: Plan) -> str:
    key = {
        "model": target.model_sha256,
        "data": target.data,
        "split_seed": target.split_seed,
        "plan": plan.sha256,
        "seed": plan.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def run_audit(
    target: AuditTarget,
    plan: Plan,
    store: Store,
    *,
    on_scenario: Callable[[ScenarioEvent], None] | None = None,
    progress: ProgressFn | None = None,
) -> AuditOutcome:
    """Run (or resume) `plan` on `target`, storing each finished scenario at once; return the run's id."""
    start = time.perf_counter()
    victim, ds = target.victim, target.dataset
    n = min(plan.n_max, ds.x_test.shape[0])
    x_all, y_all = ds.x_test[:n], ds.y_test[:n]
    indices = list(range(n))  # positions in the recorded test split (its seed and digest are in the run)
    clean = float((victim.predict(x_all).cpu() == y_all).double().mean()) if n else float("nan")
    model_id = store.model(target.model_sha256, target.model_name, target.model_meta)
    spec = RunSpec(
        identity=_identity(target, plan),
        plan_name=plan.name,
        plan_sha256=plan.sha256,
        plan_text=plan.text,
        data=target.data,
        split_seed=target.split_seed,
        seed=plan.seed,
        sample_indices=indices,
        clean_accuracy=clean,
        versions={"bastion": bastion.__version__, "torch": torch.__version__, "python": platform.python_version()},
        device=_device_name(victim.device),
        host=socket.gethostname(),
    )
    run_id, resumed = store.open_run(model_id, spec)
    done = store.finished_keys(run_id)
    ran: list[str] = []
    skipped: list[str] = []
    total = len(plan.scenarios)
    for i, sc in enumerate(plan.scenarios, start=1):
        if sc.key in done:
            skipped.append(sc.key)
            _tell(on_scenario, ScenarioEvent(i, total, sc, "skipped"))
            continue
        _tell(on_scenario, ScenarioEvent(i, total, sc, "started"))
        t0 = time.perf_counter()
        _run_scenario(store, run_id, i - 1, sc, plan.seed, victim, ds, x_all, y_all, progress)
        ran.append(sc.key)
        _tell(on_scenario, ScenarioEvent(i, total, sc, "done", time.perf_counter() - t0))
    store.finish_run(run_id)
    return AuditOutcome(run_id, resumed, tuple(ran), tuple(skipped), time.perf_counter() - start)


def _run_scenario(
    store: Store,
    run_id: int,
    position: int,
    sc: Scenario,
    seed: int,
    victim: Victim,
    ds: Dataset,
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    progress: ProgressFn | None,
) -> None:
    x, y = x_all[: sc.n], y_all[: sc.n]
    attack = sc.build(seed)
    targets = random_targets(y, ds.num_classes, seed) if sc.targeted else None
    result = attack.run(victim, x, y, target_labels=targets, progress=progress)
    warnings = list(result.warnings)
    if sc.checks:
        warnings += sanity_checks(attack, result, victim, x, y)
    record = result.to_dict()
    record["warnings"] = warnings
    store.add_result(
        run_id,
        key=sc.key,
        position=position,
        family=sc.family,
        method=sc.attack,
        spec=sc.spec(),
        metrics={k: record[k] for k in METRICS},
        record=record,
        warnings=warnings,
        seconds=result.seconds,
        artifacts=_gallery(result, x, ds.classes),
    )


def _gallery(result: AttackResult, x: torch.Tensor, classes: tuple[str, ...] | list[str]) -> list[Artifact]:
    """Up to `GALLERY` successful adversarial examples: clean | adversarial | amplified perturbation."""
    picks = (result.success & result.clean_correct).nonzero().squeeze(1)[:GALLERY].tolist()
    out = []
    for i in picks:
        caption = (
            f"{classes[int(result.y[i])]} → {classes[int(result.y_adv[i])]}  "
            f"(L∞ {float(result.linf[i]):.3f}, L2 {float(result.l2[i]):.2f})"
        )
        png = triptych(x[i].cpu(), result.x_adv[i].cpu())
        out.append(Artifact(name=f"example-{i}.png", mime="image/png", data=png, caption=caption))
    return out


def _tell(listener: Callable[[ScenarioEvent], None] | None, event: ScenarioEvent) -> None:
    if listener is not None:
        listener(event)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
