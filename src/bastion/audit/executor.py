"""Executors: how an audit's scenarios are run once the runner has opened their runs.

The runner opens (or resumes) one run per model and finds the scenarios it has not stored yet; an
executor runs those scenarios and commits each to the store as soon as it is done. `LocalExecutor`
(the default) runs them one after another in this process; `RayExecutor`
(`bastion.audit.ray_executor`) hands them to Ray as tasks.

Every scenario is independent given the model, the data, the scenario and the plan's seed: a kind
seeds what it draws from that seed and never reads what another scenario left behind, so the order
in which scenarios run, and the process that runs them, do not change the numbers.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from bastion.audit.kinds import KINDS, Scenario
from bastion.audit.target import AuditTarget
from bastion.core.progress import ProgressFn
from bastion.store import Store

__all__ = ["Executor", "LocalExecutor", "OpenRun", "ScenarioEvent", "TargetSource", "run_scenario"]

# Builds the audit target where it is called: what a worker on another process or machine calls to get
# the model and data. Must pickle (a frozen dataclass of paths and names, or a module-level function).
TargetSource = Callable[[], AuditTarget]


@dataclass(frozen=True)
class ScenarioEvent:
    """What the runner tells its listener: scenario `index` (1-based, its place in the plan) of `total`
    is skipped (already stored), started or done.

    With several models, `model` names the one the scenario audits. A Ray executor says `started` when it
    hands the scenario to Ray (it runs when Ray finds the resources) and `done` when its result is stored.
    """

    index: int
    total: int
    scenario: Scenario
    state: Literal["skipped", "started", "done"]
    seconds: float = 0.0
    model: str = ""


@dataclass(frozen=True)
class OpenRun:
    """A run the runner opened, with what is left to do: the executor's input.

    Attributes:
        run_id: the run in the store.
        target: the model under audit, as loaded here (with its `model_dir` for this run).
        source: builds the same target elsewhere (None: only this process can run the scenarios).
        seed: the plan's seed.
        total: how many scenarios the plan has.
        pending: (place in the plan, 0-based; scenario) of each scenario not stored yet.
    """

    run_id: int
    target: AuditTarget
    source: TargetSource | None
    seed: int
    total: int
    pending: tuple[tuple[int, Scenario], ...]


Listener = Callable[[ScenarioEvent], None]


class Executor(ABC):
    """Runs the pending scenarios of open runs, each committed to the store when it is done."""

    @abstractmethod
    def execute(
        self,
        runs: Sequence[OpenRun],
        store: Store,
        *,
        on_scenario: Listener | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        """Run and store every pending scenario of `runs`; raise when one fails (after storing the rest it
        could). The caller finishes the runs."""


class LocalExecutor(Executor):
    """One scenario after another, in this process, on the target as loaded here (the default)."""

    def execute(
        self,
        runs: Sequence[OpenRun],
        store: Store,
        *,
        on_scenario: Listener | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        for run in runs:
            for position, sc in run.pending:
                event = ScenarioEvent(position + 1, run.total, sc, "started", model=run.target.model_name)
                tell(on_scenario, event)
                t0 = time.perf_counter()
                run_scenario(store, run.run_id, position, sc, run.seed, run.target, progress)
                tell(on_scenario, replace(event, state="done", seconds=time.perf_counter() - t0))


def run_scenario(
    store: Store,
    run_id: int,
    position: int,
    sc: Scenario,
    seed: int,
    target: AuditTarget,
    progress: ProgressFn | None = None,
    *,
    if_absent: bool = False,
) -> bool:
    """Run one scenario and store its result with its images in one transaction.

    With `if_absent`, a result already stored for (run, scenario) is left as it is and this one dropped
    (a retried task whose first attempt committed before it died); returns whether the result was stored.
    """
    result = KINDS.get(sc.kind).run(sc, target, seed=seed, progress=progress)
    return store.add_result(
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
        if_absent=if_absent,
    )


def with_model_dir(target: AuditTarget, model_dir: Path | None) -> AuditTarget:
    return target if model_dir is None else replace(target, model_dir=model_dir)


def tell(listener: Listener | None, event: ScenarioEvent) -> None:
    if listener is not None:
        listener(event)
