"""The audit runner: apply a plan to a model, committing each scenario to the store as it finishes.

A run is identified by what makes two invocations the same audit (model hash, data set, split, plan
text, seed). Started again after a crash or a kill, the runner finds the unfinished run with that
identity and does only the scenarios it has not stored yet; a scenario's result and its images are
one transaction, so a kill mid-scenario leaves nothing of it behind. The scenarios are run by an
executor (`bastion.audit.executor`): here, one after another, by default; as Ray tasks on request.
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

import bastion
from bastion.audit.executor import Executor, LocalExecutor, OpenRun, ScenarioEvent, TargetSource
from bastion.audit.executor import tell as _tell
from bastion.audit.kinds import KINDS
from bastion.audit.plan import Plan
from bastion.audit.target import AuditTarget
from bastion.core.errors import ConfigError, StoreError
from bastion.core.progress import ProgressFn
from bastion.store import RunSpec, Store

__all__ = ["AuditJob", "AuditOutcome", "ScenarioEvent", "run_audit", "run_audits"]


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


@dataclass(frozen=True)
class AuditJob:
    """One model to audit with a plan.

    Attributes:
        target: the model under audit, loaded here (its hash, data and clean accuracy identify the run).
        plan: the plan.
        source: builds the same target in another process or on another machine (a Ray worker); the
            local executor does not need it.
    """

    target: AuditTarget
    plan: Plan
    source: TargetSource | None = None


def run_audit(
    target: AuditTarget,
    plan: Plan,
    store: Store,
    *,
    on_scenario: Callable[[ScenarioEvent], None] | None = None,
    progress: ProgressFn | None = None,
    model_dir: Path | None = None,
    executor: Executor | None = None,
    source: TargetSource | None = None,
) -> AuditOutcome:
    """Run (or resume) `plan` on `target`, storing each finished scenario at once; return the outcome.

    The models a scenario trains (a poisoned copy, shadow models) are kept as checkpoints in
    `model_dir/run-ID/`, so that a resumed run reads them back instead of training them again.
    `executor` runs the scenarios (default: `LocalExecutor`, one after another here); an executor that
    runs them elsewhere needs the target's `source`.
    """
    (outcome,) = run_audits(
        [AuditJob(target, plan, source)],
        store,
        on_scenario=on_scenario,
        progress=progress,
        model_dir=model_dir,
        executor=executor,
    )
    return outcome


def run_audits(
    jobs: Sequence[AuditJob],
    store: Store,
    *,
    on_scenario: Callable[[ScenarioEvent], None] | None = None,
    progress: ProgressFn | None = None,
    model_dir: Path | None = None,
    executor: Executor | None = None,
) -> list[AuditOutcome]:
    """Audit several models, one run each (opened or resumed, as `run_audit` does), their scenarios run by
    one executor: the local one audits the models one after another, Ray runs all their scenarios at once.

    Each run is finished when all its scenarios are stored; when a scenario fails, the executor raises
    after storing what it could, and the runs it leaves unfinished resume on the next call.
    """
    executor = executor if executor is not None else LocalExecutor()
    start = time.perf_counter()
    for job in jobs:  # refuse a plan a target cannot run before any run is opened
        _check_target(job.target, job.plan)
    identities = [_identity(job.target, job.plan) for job in jobs]
    if len(set(identities)) < len(identities):
        raise ConfigError("the same model is given twice with the same data and plan: give each model once")
    opened = [(job, *_open(job, store, model_dir)) for job in jobs]
    for job, run, _ in opened:
        for position, sc in enumerate(job.plan.scenarios):
            if all(p != position for p, _ in run.pending):
                _tell(on_scenario, ScenarioEvent(position + 1, run.total, sc, "skipped", model=run.target.model_name))
    outcomes = []
    if isinstance(executor, LocalExecutor):  # one model after another: each run ends when its last scenario does
        for job, run, resumed in opened:
            t0 = time.perf_counter()
            executor.execute([run], store, on_scenario=on_scenario, progress=progress)
            store.finish_run(run.run_id)
            outcomes.append(_outcome(job, run, resumed, time.perf_counter() - t0))
        return outcomes
    executor.execute([run for _, run, _ in opened], store, on_scenario=on_scenario, progress=progress)
    seconds = time.perf_counter() - start
    for job, run, resumed in opened:
        missing = {sc.key for _, sc in run.pending} - store.finished_keys(run.run_id)
        if missing:  # an executor must store every scenario or raise: never finish a run with a hole
            lacking = ", ".join(sorted(missing))
            raise StoreError(f"run {run.run_id} lacks scenario(s) {lacking} after the executor ended")
        store.finish_run(run.run_id)
        outcomes.append(_outcome(job, run, resumed, seconds))
    return outcomes


def _open(job: AuditJob, store: Store, model_dir: Path | None) -> tuple[OpenRun, bool]:
    """Open (or resume) the run of `job`: record the model and the run's provenance, find what is stored."""
    target, plan = job.target, job.plan
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
    pending = tuple((i, sc) for i, sc in enumerate(plan.scenarios) if sc.key not in done)
    return OpenRun(run_id, target, job.source, plan.seed, len(plan.scenarios), pending), resumed


def _outcome(job: AuditJob, run: OpenRun, resumed: bool, seconds: float) -> AuditOutcome:
    ran = tuple(sc.key for _, sc in run.pending)
    skipped = tuple(sc.key for sc in job.plan.scenarios if sc.key not in ran)
    return AuditOutcome(run.run_id, resumed, ran, skipped, seconds)


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


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
