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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

import bastion
from bastion.audit.kinds import KINDS, Scenario
from bastion.audit.plan import Plan
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressFn
from bastion.store import RunSpec, Store

__all__ = ["AuditOutcome", "ScenarioEvent", "run_audit"]


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
    key: dict[str, object] = {
        "model": target.model_sha256,
        "data": target.data,
        "split_seed": target.split_seed,
        "plan": plan.sha256,
        "seed": plan.seed,
    }
    if target.ood_name is not None:  # a second data set changes what the OOD scenarios measure
        key["ood_data"] = target.ood_name
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def run_audit(
    target: AuditTarget,
    plan: Plan,
    store: Store,
    *,
    on_scenario: Callable[[ScenarioEvent], None] | None = None,
    progress: ProgressFn | None = None,
    model_dir: Path | None = None,
) -> AuditOutcome:
    """Run (or resume) `plan` on `target`, storing each finished scenario at once; return the run's id.

    The models a scenario trains (a poisoned copy, shadow models) are kept as checkpoints in
    `model_dir/run-ID/`, so that a resumed run reads them back instead of training them again.
    """
    start = time.perf_counter()
    _check_target(target, plan)
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
    if model_dir is not None:
        target = replace(target, model_dir=model_dir / f"run-{run_id}")
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
        _run_scenario(store, run_id, i - 1, sc, plan.seed, target, progress)
        ran.append(sc.key)
        _tell(on_scenario, ScenarioEvent(i, total, sc, "done", time.perf_counter() - t0))
    store.finish_run(run_id)
    return AuditOutcome(run_id, resumed, tuple(ran), tuple(skipped), time.perf_counter() - start)


def _check_target(target: AuditTarget, plan: Plan) -> None:
    """Refuse, before anything runs, a plan that asks what the target cannot give."""
    if not target.white_box:
        reveals = getattr(target.victim, "reveals", "logits")
        needs = [sc.key for sc in plan.scenarios if KINDS.get(sc.kind).access(sc) not in ("scores", "top-k", "label")]
        scores = [sc.key for sc in plan.scenarios if KINDS.get(sc.kind).access(sc) in ("scores", "top-k")]
        if needs:
            raise ConfigError(
                f"{target.model_name} answers queries only, but plan {plan.name!r} has {len(needs)} scenario(s) that "
                f"need the model's weights, gradients or training ({_some(needs)}); audit it with --plan blackbox, "
                "or a plan of score- and decision-based evasion attacks"
            )
        if reveals == "label" and scores:
            raise ConfigError(
                f"{target.model_name} answers with labels only, but plan {plan.name!r} has {len(scores)} score-based "
                f"scenario(s) ({_some(scores)}); audit it with a plan of decision-based attacks (e.g. hsja, cgba)"
            )
    for sc in plan.scenarios:
        KINDS.get(sc.kind).check(sc, target)


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _run_scenario(
    store: Store,
    run_id: int,
    position: int,
    sc: Scenario,
    seed: int,
    target: AuditTarget,
    progress: ProgressFn | None,
) -> None:
    result = KINDS.get(sc.kind).run(sc, target, seed=seed, progress=progress)
    store.add_result(
        run_id,
        key=sc.key,
        position=position,
        family=sc.kind,
        method=sc.method,
        spec=sc.spec(),
        metrics=result.metrics,
        record=result.record,
        warnings=result.warnings,
        seconds=result.seconds,
        artifacts=result.artifacts,
    )


def _tell(listener: Callable[[ScenarioEvent], None] | None, event: ScenarioEvent) -> None:
    if listener is not None:
        listener(event)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
