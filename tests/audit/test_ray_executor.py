"""The Ray executor: the same plan gives the numbers of the local executor, a worker killed mid-scenario is
retried without losing or duplicating a result, several models get one run each, and mistakes are one line.

One local Ray with 2 CPUs serves the whole module (starting one takes several seconds)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bastion.audit import AuditTarget, LocalExecutor, RayExecutor, TargetSource, parse_plan, run_audit
from bastion.audit.ray_executor import scenario_task, worker_store_url
from bastion.cli._target import ModelSource
from bastion.cli.app import app
from bastion.core.errors import BastionError, ConfigError, StoreError
from bastion.store import Store
from bastion.store.schema import ResultRow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DIGITS = FIXTURES / "small_cnn-digits.safetensors"
MNIST = FIXTURES / "small_cnn-mnist5k.safetensors"

PLAN = """\
name: ray-small
n: 60
seed: 3
scenarios:
  - attack: fgsm
    eps: [0.1, 0.3]
  - attack: pgd
    eps: 0.2
    params: {steps: 5}
  - attack: square
    eps: 0.3
    n: 20
    max_queries: 40
    params: {n_queries: 40}
  - attack: modified-entropy
    n: 150
  - attack: lira
    n: 100
    params: {shadows: 2}
  - detector: energy
    n: 100
    sets: [uniform]
"""
KEYS = ["fgsm@0.1", "fgsm@0.3", "pgd", "square", "modified-entropy", "lira", "energy"]


@pytest.fixture(scope="module")
def ray_session() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    # the helpers below travel to the workers by value: the workers cannot import the tests
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@dataclass(frozen=True)
class KillOnce:
    """A target source whose model kills its own worker (SIGKILL) at its `at`-th forward pass, once over all
    workers: whoever creates `marker` first dies; later attempts run normally."""

    args: TargetSource
    marker: Path
    at: int = 3

    def __call__(self) -> AuditTarget:
        target = self.args()
        calls = [0]

        def hook(*_: object) -> None:
            calls[0] += 1
            if calls[0] == self.at:
                try:
                    self.marker.open("x").close()
                except FileExistsError:
                    return
                os.kill(os.getpid(), signal.SIGKILL)

        target.victim.model.register_forward_hook(hook)
        return target


def _results(url: str, run_id: int) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each stored scenario's metrics and per-sample record, wall times left out."""
    with Store(url) as store:
        rows = store.run(run_id).results
    out = {}
    for r in rows:
        metrics = {k: v for k, v in r.metrics.items() if "seconds" not in k}
        out[r.key] = (metrics, r.record.get("per_sample", {}))
    return out


def _count(url: str, run_id: int) -> dict[str, int]:
    with Store(url) as store, store.engine.connect() as conn:
        rows = conn.execute(
            select(ResultRow.key, func.count()).where(ResultRow.run_id == run_id).group_by(ResultRow.key)
        )
        return dict(rows.all())


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """The plan run by the local executor, one scenario after another in this process."""
    folder = tmp_path_factory.mktemp("local")
    url = f"sqlite:///{folder / 'local.db'}"
    source = ModelSource(checkpoint=DIGITS).target
    with Store(url) as store:
        outcome = run_audit(source(), parse_plan(PLAN), store, executor=LocalExecutor(), model_dir=folder / "models")
    return _results(url, outcome.run_id)


def test_ray_gives_the_local_numbers_even_when_a_worker_is_killed_mid_scenario(
    ray_session: Any, local_reference: dict[str, Any], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    marker = tmp_path / "killed"
    source = KillOnce(ModelSource(checkpoint=DIGITS).target, marker)
    with Store(url) as store:
        outcome = run_audit(
            source(), parse_plan(PLAN), store, executor=RayExecutor(max_retries=2), source=source, model_dir=tmp_path
        )
        assert store.run(outcome.run_id).status == "finished"
    assert marker.exists()  # a worker did die mid-scenario, and Ray ran its task again
    assert _count(url, outcome.run_id) == dict.fromkeys(KEYS, 1)  # nothing lost, nothing twice
    assert sorted(outcome.ran) == sorted(KEYS) and not outcome.skipped
    ray = _results(url, outcome.run_id)
    assert list(ray) == KEYS  # stored in plan order whatever order they finished in
    for key in KEYS:
        assert ray[key] == local_reference[key], key
    assert local_reference["pgd"][0]["success_rate"] > 0 and local_reference["lira"][0]["auroc"] > 0


def test_a_worker_killed_past_its_retries_leaves_a_run_that_resumes(ray_session: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    plan = parse_plan(PLAN.split("  - attack: modified-entropy")[0])  # the four evasion scenarios
    args = ModelSource(checkpoint=DIGITS).target
    source = KillOnce(args, tmp_path / "killed")
    with Store(url) as store:
        with pytest.raises(BastionError, match=r"1 scenario\(s\) failed on Ray: .*resumes the unfinished run"):
            run_audit(source(), plan, store, executor=RayExecutor(max_retries=0), source=source)
        (run_id,) = store.run_ids()
        assert store.run(run_id).status == "running" and len(store.finished_keys(run_id)) == 3
        outcome = run_audit(args(), plan, store)  # the local executor does what is left
        assert outcome.run_id == run_id and outcome.resumed and len(outcome.ran) == 1 and len(outcome.skipped) == 3
        assert store.run(run_id).status == "finished"
    assert _count(url, run_id) == dict.fromkeys(KEYS[:4], 1)


def test_a_retried_task_whose_result_is_stored_stores_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    plan = parse_plan(PLAN.split("  - attack: pgd")[0])
    args = ModelSource(checkpoint=DIGITS).target
    with Store(url) as store:
        outcome = run_audit(args(), plan, store)
        sc = plan.scenarios[0]
        before = _results(url, outcome.run_id)
        stored, _ = scenario_task(args, url, outcome.run_id, 0, sc, plan.seed, None)
        assert not stored  # a second attempt finds the result and does not run again
        result = store.run(outcome.run_id).results[0]
        row = {k: getattr(result, k) for k in ("key", "position", "family", "method", "spec", "metrics", "record")}
        assert not store.add_result(outcome.run_id, **row, warnings=[], seconds=0.0, if_absent=True)
        with pytest.raises(StoreError, match="already holds a result"):
            store.add_result(outcome.run_id, **row, warnings=[], seconds=0.0)
    assert _results(url, outcome.run_id) == before and _count(url, outcome.run_id) == {
        sc.key: 1,
        plan.scenarios[1].key: 1,
    }


def test_two_checkpoints_in_one_command_get_a_run_each(ray_session: Any, store_url: str, tmp_path: Path) -> None:
    """On SQLite and on PostgreSQL (the database of a cluster), the workers committing at once."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.split("  - attack: square")[0])
    out = tmp_path / "reports"
    args = ["audit", "-c", str(DIGITS), "-c", str(MNIST), "--plan", str(plan), "-o", str(out)]
    result = CliRunner().invoke(app, [*args, "--db", store_url, "--executor", "ray", "-q"])
    assert result.exit_code == 0, result.stderr
    with Store(store_url) as store:
        runs = [store.run(i) for i in store.run_ids()]
    assert [(r.model.name, r.status, r.data) for r in runs] == [
        ("small_cnn-digits.safetensors", "finished", "digits"),
        ("small_cnn-mnist5k.safetensors", "finished", "mnist5k"),
    ]
    assert all([x.key for x in r.results] == KEYS[:3] for r in runs)
    assert result.stdout.count("audit of small_cnn-") == 2
    assert all((out / f"run-{r.id}" / "report.html").is_file() for r in runs)
    local_url = f"sqlite:///{tmp_path / 'local.db'}"
    local = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "local"), "--db", local_url, "-q"])
    assert local.exit_code == 0, local.stderr
    with Store(local_url) as store:
        local_ids = store.run_ids()
        assert [store.run(i).status for i in local_ids] == ["finished", "finished"]
    for r, i in zip(runs, local_ids, strict=True):
        assert _results(store_url, r.id) == _results(local_url, i)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "ray", "--ray-address", "10.0.0.9:6379"], "SQLite file, which Ray workers on other machines"),
        (["--ray-cpus", "2"], "--ray-cpus goes with --executor ray"),
        (["--ray-address", "auto"], "--ray-address goes with --executor ray"),
        (["--executor", "ray", "--db", "sqlite://"], "not SQLite in memory"),
        (["--executor", "dask"], "'dask' is not one of"),
        (["-c", str(MNIST), "--model", "torchvision.models:resnet18"], "--model audits one model of yours"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    db = [] if "--db" in extra else ["--db", f"sqlite:///{tmp_path / 'r.db'}"]
    result = CliRunner().invoke(app, ["audit", "-c", str(DIGITS), *db, *extra])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_without_ray_the_executor_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    result = CliRunner().invoke(
        app, ["audit", "-c", str(DIGITS), "--db", f"sqlite:///{tmp_path / 'r.db'}", "--executor", "ray"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: the Ray executor needs ray, which is not installed: pip install 'bastion[ray]'"
    ]


def test_library_mistakes(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="PostgreSQL"):
        worker_store_url("sqlite:///x.db", local=False)
    assert worker_store_url("postgresql+psycopg://u@h/db", local=False) == "postgresql+psycopg://u@h/db"
    assert worker_store_url("sqlite:///rel/x.db", local=True) == f"sqlite:///{Path('rel/x.db').resolve()}"
    with pytest.raises(ConfigError, match="num_cpus sizes a Ray started here"):
        RayExecutor(address="auto", num_cpus=2)
    with pytest.raises(ConfigError, match="takes num_cpus and num_gpus"):
        RayExecutor(kind_resources={"membership": {"memory": 1}})
    args = ModelSource(checkpoint=DIGITS).target
    plan = parse_plan(PLAN.split("  - attack: pgd")[0])
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store, pytest.raises(ConfigError, match="has no source"):
        run_audit(args(), plan, store, executor=RayExecutor())


def test_a_task_larger_than_the_cluster_is_refused_not_left_waiting(ray_session: Any, tmp_path: Path) -> None:
    args = ModelSource(checkpoint=DIGITS).target
    plan = parse_plan(PLAN.split("  - attack: pgd")[0])
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        with pytest.raises(
            ConfigError, match=r"'fgsm@0.1' asks Ray for 1 GPU\(s\) per task, but the Ray cluster has 0"
        ):
            run_audit(args(), plan, store, executor=RayExecutor(task_gpus=1), source=args)
        many = RayExecutor(kind_resources={"evasion": {"num_cpus": 3}})
        with pytest.raises(ConfigError, match=r"asks Ray for 3 CPU\(s\) per task, but the Ray cluster has 2"):
            run_audit(args(), plan, store, executor=many, source=args)


def test_a_deployed_model_runs_on_ray_as_it_runs_here(ray_session: Any, tmp_path: Path) -> None:
    """An ONNX file travels to the workers as its path (a `ModelSource`), not as a loaded session."""
    pytest.importorskip("onnxruntime")
    from bastion.deploy import export_onnx
    from bastion.models import load_checkpoint

    model, meta = load_checkpoint(DIGITS)
    onnx = export_onnx(
        model,
        tmp_path / "digits.onnx",
        input_shape=(1, 8, 8),
        metadata={"dataset": meta.dataset, "split_seed": meta.split_seed},
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: ray-blackbox\nn: 30\nseed: 3\nscenarios:\n"
        "  - attack: square\n    eps: 0.3\n    max_queries: 40\n    params: {n_queries: 40}\n"
        "  - attack: hsja\n    norm: l2\n    eps: 2.0\n    n: 10\n    max_queries: 60\n"
        "    params: {steps: 3, init_evals: 10}\n"
    )
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("ray", "local")}
    for name, extra in (("ray", ["--executor", "ray"]), ("local", [])):
        args = ["audit", "--onnx", str(onnx), "--plan", str(plan), "--db", urls[name], "-o", str(tmp_path / name)]
        result = CliRunner().invoke(app, [*args, *extra, "-q"])
        assert result.exit_code == 0, result.stderr
    results = {name: _results(url, 1) for name, url in urls.items()}
    assert list(results["ray"]) == ["square", "hsja"] and results["ray"] == results["local"]
