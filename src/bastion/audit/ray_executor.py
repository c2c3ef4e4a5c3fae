"""`RayExecutor`: an audit's scenarios (of one model or several) as Ray tasks, each storing its own result.

Each pending scenario becomes one Ray task (https://docs.ray.io/en/latest/ray-core/tasks.html) that
rebuilds the audit target on its worker from the run's `source` (a small picklable spec: checkpoint
path, data set, data root, device...), runs the scenario and commits its result to the store, which
it opens itself from the store's URL. The driver only waits, tells its listener what is done and
finishes the runs. Nothing but the spec, the scenario and the URL travels: workers on other machines
need the same files (checkpoint, data root, the folder the audit keeps its trained models in) at the
same absolute paths, and a database they can all reach (PostgreSQL; a SQLite file serves a Ray started
on this machine only).

A task whose worker dies (killed, out of memory, its node lost) is run again by Ray, up to
`max_retries` times. A retry whose first attempt already stored the result stores nothing (the store
keeps one result per scenario of a run), so a retried task never loses or duplicates a result. An
exception raised by the scenario itself is not retried: it would raise again.

Ray is an optional extra: `pip install 'bastion[ray]'`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bastion.audit.executor import (
    Executor,
    Listener,
    OpenRun,
    ScenarioEvent,
    TargetSource,
    run_scenario,
    tell,
    with_model_dir,
)
from bastion.audit.kinds import Scenario
from bastion.core.errors import BastionError, ConfigError, StoreError, require_extra
from bastion.core.progress import ProgressFn
from bastion.store import Store

__all__ = ["RayExecutor", "scenario_task"]


@dataclass(frozen=True)
class RayExecutor(Executor):
    """Run the scenarios of one or several runs as Ray tasks, all at once, as resources allow.

    Args:
        address: the Ray cluster to join (`ray://host:10001`, `host:6379`, `auto`); None starts a Ray on
            this machine for the audit and stops it after (a Ray already started in this process, as
            `ray.init()` leaves it, is used as it is and left running).
        num_cpus: the CPUs of a Ray started here (None: all of this machine's); the number of scenarios
            that run at once when each takes one CPU.
        task_cpus: the CPUs each scenario reserves.
        task_gpus: the GPUs each scenario reserves; None: 1 when the audit runs on CUDA, else 0.
        kind_resources: per scenario kind, what its tasks reserve instead:
            `{"membership": {"num_cpus": 2}}` (keys `num_cpus`, `num_gpus`).
        max_retries: how many times Ray runs a task again whose worker died.
    """

    address: str | None = None
    num_cpus: int | None = None
    task_cpus: float = 1.0
    task_gpus: float | None = None
    kind_resources: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus must be at least 1, got {self.num_cpus}")
        if self.num_cpus is not None and self.address is not None:
            raise ConfigError("num_cpus sizes a Ray started here; a cluster joined at an address has its own CPUs")
        if self.task_cpus < 0 or (self.task_gpus is not None and self.task_gpus < 0):
            raise ConfigError(f"task resources must be >= 0, got {self.task_cpus} CPU(s), {self.task_gpus} GPU(s)")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        for kind, res in self.kind_resources.items():
            unknown = set(res) - {"num_cpus", "num_gpus"}
            if unknown:
                raise ConfigError(f"kind_resources[{kind!r}] takes num_cpus and num_gpus, not {', '.join(unknown)}")

    def check(self, store_url: str) -> None:
        """Fail now, before any model is loaded, when Ray is missing or its workers cannot reach the store."""
        worker_store_url(store_url, local=self.address in (None, "local"))
        _import_ray()

    def execute(
        self,
        runs: Sequence[OpenRun],
        store: Store,
        *,
        on_scenario: Listener | None = None,
        progress: ProgressFn | None = None,  # a worker's progress does not reach this process
    ) -> None:
        url = worker_store_url(store.url, local=self.address in (None, "local"))
        for run in runs:
            if run.source is None and run.pending:
                raise ConfigError(
                    f"the Ray executor rebuilds the model on its workers, but {run.target.model_name} has no source"
                )
        if not any(run.pending for run in runs):
            return
        ray = _import_ray()
        started = _start(ray, self.address, self.num_cpus)
        try:
            self._run_tasks(ray, runs, url, on_scenario)
        finally:
            if started:
                ray.shutdown()

    def _run_tasks(self, ray: Any, runs: Sequence[OpenRun], url: str, on_scenario: Listener | None) -> None:
        self._check_fits(ray.cluster_resources(), runs)
        remote = ray.remote(scenario_task)
        waiting: dict[Any, tuple[OpenRun, int, Scenario]] = {}
        for run in runs:
            source = ray.put(run.source)  # one copy in the object store, whatever the number of tasks
            for position, sc in run.pending:
                ref = remote.options(
                    name=f"bastion-audit:run-{run.run_id}:{sc.key}",
                    max_retries=self.max_retries,
                    retry_exceptions=False,
                    **self._resources(sc, run),
                ).remote(source, url, run.run_id, position, sc, run.seed, run.target.model_dir)
                waiting[ref] = (run, position, sc)
                tell(on_scenario, self._event(run, position, sc, "started"))
        failures: list[str] = []
        try:
            while waiting:
                ready, _ = ray.wait(list(waiting), num_returns=1)
                for ref in ready:
                    run, position, sc = waiting.pop(ref)
                    try:
                        _, seconds = ray.get(ref)
                    except Exception as e:  # the scenario's own error, or its worker died more often than allowed
                        failures.append(f"{sc.key} (run {run.run_id}): {_failure(e)}")
                        continue
                    tell(on_scenario, self._event(run, position, sc, "done", seconds))
        except BaseException:  # interrupted: stop what is still queued or running, then let the error through
            for ref in waiting:
                ray.cancel(ref, force=True)
            raise
        if failures:
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            raise BastionError(
                f"{len(failures)} scenario(s) failed on Ray: {'; '.join(failures[:3])}{more}. The others are "
                "stored; the same command resumes the unfinished run(s)"
            )

    def _check_fits(self, cluster: Mapping[str, float], runs: Sequence[OpenRun]) -> None:
        """A task that asks for more than the whole cluster has would wait for ever: say so instead."""
        for run in runs:
            for _, sc in run.pending:
                res = self._resources(sc, run)
                for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
                    if res[key] > cluster.get(name, 0):
                        hint = " (audit on --device cpu, or join a cluster with GPUs)" if name == "GPU" else ""
                        raise ConfigError(
                            f"scenario {sc.key!r} asks Ray for {res[key]:g} {name}(s) per task, but the Ray "
                            f"cluster has {cluster.get(name, 0):g}{hint}"
                        )

    def _resources(self, sc: Scenario, run: OpenRun) -> dict[str, float]:
        gpus = self.task_gpus if self.task_gpus is not None else float(run.target.victim.device.type == "cuda")
        res = {"num_cpus": self.task_cpus, "num_gpus": gpus}
        res.update(self.kind_resources.get(sc.kind, {}))
        return res

    @staticmethod
    def _event(run: OpenRun, position: int, sc: Scenario, state: Any, seconds: float = 0.0) -> ScenarioEvent:
        return ScenarioEvent(position + 1, run.total, sc, state, seconds, model=run.target.model_name)


def scenario_task(
    source: TargetSource,
    store_url: str,
    run_id: int,
    position: int,
    sc: Scenario,
    seed: int,
    model_dir: Path | None,
) -> tuple[bool, float]:
    """One scenario on a Ray worker: rebuild the target, run the scenario, store its result.

    Returns whether it stored the result (False when an earlier attempt of the task already had: then the
    scenario is not run again; or stored it while this one ran) and the seconds the task took.
    """
    t0 = time.perf_counter()
    with Store(store_url) as store:
        if sc.key in store.finished_keys(run_id):
            return False, time.perf_counter() - t0
        target = with_model_dir(source(), model_dir)
        stored = run_scenario(store, run_id, position, sc, seed, target, if_absent=True)
        return stored, time.perf_counter() - t0


def worker_store_url(url: str, *, local: bool) -> str:
    """The store's URL as workers open it: a SQLite file by its absolute path (a worker's working folder
    may differ). SQLite in memory cannot be shared, and a SQLite file not across machines."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    if parsed.database in (None, "", ":memory:"):
        raise StoreError("the Ray executor needs a database its workers can open: not SQLite in memory")
    if not local:
        raise StoreError(
            f"--db {url!r} is a SQLite file, which Ray workers on other machines cannot write: give a PostgreSQL "
            "URL (--db postgresql+psycopg://user@host/db), or leave out --ray-address to run Ray on this machine"
        )
    absolute = str(Path(parsed.database).expanduser().resolve())
    return parsed.set(database=absolute).render_as_string(hide_password=False)


def _import_ray() -> Any:
    return require_extra("ray", extra="ray", purpose="the Ray executor")


def _start(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Join or start Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "local"):
        options["num_cpus"] = num_cpus
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "start Ray on this machine" if address in (None, "local") else f"join the Ray cluster at {address!r}"
        raise ConfigError(f"cannot {where}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    return True


def _failure(e: Exception) -> str:
    """One line on why a task failed: the scenario's own error, or how its worker died."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):  # a RayTaskError wraps the exception the task raised
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
