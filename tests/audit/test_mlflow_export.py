"""`bastion export mlflow`: a tiny real audit logged to a local MLflow file store and read back through
MLflow's own client holds exactly the stored numbers; a second export is refused unless forced; every
mistake is one line and exit 2."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.audit import presenters
from bastion.cli.app import app
from bastion.report import render, summarize
from bastion.report.mlflow import _scenario_keys, mlflow_key, resolve_tracking_uri
from bastion.store import Store

mlflow_tracking = pytest.importorskip("mlflow.tracking")
mlflow_exceptions = pytest.importorskip("mlflow.exceptions")

runner = CliRunner()

PLAN = """\
name: tiny-mlflow
n: 40
seed: 3
scenarios:
  - attack: fgsm
    eps: [0.1, 0.3]
  - attack: fgsm
    name: fgsm/strong
    eps: 0.5
  - attack: modified-entropy
    n: 100
"""


def run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def audited(digits_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """(database URL, run id) of a finished audit: three evasion scenarios and one membership scenario."""
    folder = tmp_path_factory.mktemp("mlflow-audit")
    (folder / "plan.yaml").write_text(PLAN)
    url = f"sqlite:///{folder / 'results.db'}"
    args = ["audit", "-c", digits_checkpoint, "--plan", folder / "plan.yaml", "--db", url, "-o", folder / "r", "-q"]
    code, stdout, stderr = run(*args)
    assert code == 0, stderr
    return url, int(stdout.split(", run ")[1].split()[0])


@pytest.fixture
def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh MLflow file store; MLflow 3 opens one only with MLFLOW_ALLOW_FILE_STORE=true, which the
    reading side of these tests sets (the export sets it for itself, see test_export_opts_in_to_the_file_store)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return (tmp_path / "mlruns").as_uri()


def test_export_logs_the_stored_numbers(audited: tuple[str, int], file_store: str, tmp_path: Path) -> None:
    url, run_id = audited
    code, stdout, stderr = run("export", "mlflow", run_id, "--db", url, "--tracking-uri", file_store)
    assert code == 0, stderr
    assert f"run {run_id} -> MLflow run " in stdout and "experiment 'bastion'" in stdout
    client = mlflow_tracking.MlflowClient(tracking_uri=file_store)
    experiment = client.get_experiment_by_name("bastion")
    assert experiment is not None
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == f"bastion-{run_id}"
    with Store(url) as store:
        stored = store.run(run_id)
    data = mlrun.data
    assert data.params == {
        "plan": "tiny-mlflow",
        "plan_sha256": stored.plan_sha256,
        "seed": "3",
        "data": "digits",
        "split_seed": str(stored.split_seed),
        "samples": "100",
        "model": stored.model.name,
        "model_sha256": stored.model.sha256,
        "device": stored.device,
        "host": stored.host,
        **{f"version.{k}": v for k, v in stored.versions.items()},
        "scenario.fgsm_0.1": "fgsm@0.1",
        "scenario.fgsm_0.3": "fgsm@0.3",
        "scenario.fgsm_strong": "fgsm/strong",
        "scenario.modified-entropy": "modified-entropy",
    }
    assert len(stored.plan_sha256) == 64 and stored.versions["torch"] and stored.device.startswith("cpu")
    # every stored number under <scenario>.<metric>, clean accuracy on its own, and nothing else
    prefixes = {"fgsm@0.1": "fgsm_0.1", "fgsm@0.3": "fgsm_0.3", "fgsm/strong": "fgsm_strong"}
    expected = {"clean_accuracy": stored.clean_accuracy}
    for r in stored.results:
        prefix = prefixes.get(r.key, r.key)
        expected |= {f"{prefix}.{k}": float(v) for k, v in r.metrics.items() if isinstance(v, int | float)}
    assert data.metrics == pytest.approx(expected, rel=1e-12)
    assert data.metrics["fgsm_0.3.robust_accuracy"] < data.metrics["clean_accuracy"]
    assert 0 <= data.metrics["modified-entropy.auroc"] <= 1
    assert {k: data.tags[k] for k in ("bastion.run_id", "bastion.status", "bastion.model", "bastion.plan")} == {
        "bastion.run_id": str(run_id),
        "bastion.status": "finished",
        "bastion.model": stored.model.name,
        "bastion.plan": "tiny-mlflow",
    }
    assert data.tags["bastion.families"] == "evasion,membership"
    assert data.tags["mlflow.note.content"].startswith(f"bastion audit run {run_id} of ")
    # the artifacts are the report, summary.json and the plan of this very run
    listed = sorted(a.path for a in client.list_artifacts(mlrun.info.run_id))
    assert listed == ["plan.yaml", "report.html", "summary.json"]
    got = Path(client.download_artifacts(mlrun.info.run_id, "", str(tmp_path / "dl")))
    with Store(url) as store:
        stored = store.run(run_id)
    assert json.loads((got / "summary.json").read_text()) == json.loads(json.dumps(summarize(stored, presenters())))
    assert (got / "report.html").read_text() == render(stored, presenters())
    assert (got / "plan.yaml").read_text() == PLAN


def test_a_second_export_is_refused_unless_forced(audited: tuple[str, int], file_store: str) -> None:
    url, run_id = audited
    base = ["export", "mlflow", run_id, "--db", url, "--tracking-uri", file_store, "--experiment", "ci"]
    assert run(*base)[0] == 0
    client = mlflow_tracking.MlflowClient(tracking_uri=file_store)
    experiment = client.get_experiment_by_name("ci")
    assert experiment is not None
    (first,) = client.search_runs([experiment.experiment_id])
    code, _, stderr = run(*base)
    assert code == 2 and stderr.count("\n") == 1
    assert f"already in the MLflow experiment 'ci' as run {first.info.run_id}; pass --force" in stderr
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert run(*base, "--force")[0] == 0
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and runs[0].data.metrics == runs[1].data.metrics


def test_a_failed_export_is_marked_and_may_be_retried(
    audited: tuple[str, int], file_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, run_id = audited
    base = ["export", "mlflow", run_id, "--db", url, "--tracking-uri", file_store]

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise mlflow_exceptions.MlflowException("artifact store is read-only")

    with monkeypatch.context() as m:
        m.setattr(mlflow_tracking.MlflowClient, "log_artifacts", refuse)
        code, _, stderr = run(*base)
    assert code == 2 and stderr.count("\n") == 1
    assert "MLflow at file:" in stderr and "artifact store is read-only" in stderr and "marked FAILED" in stderr
    client = mlflow_tracking.MlflowClient(tracking_uri=file_store)
    experiment = client.get_experiment_by_name("bastion")
    assert experiment is not None
    (failed,) = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
    assert run(*base)[0] == 0  # a failed export does not count as one
    statuses = sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]
    client.delete_experiment(experiment.experiment_id)
    code, _, stderr = run(*base)
    assert code == 2 and "the MLflow experiment 'bastion' is deleted" in stderr


def test_export_opts_in_to_the_file_store(
    audited: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder as tracking URI is a file store: the export opts in for itself and leaves the variable unset;
    a user who set it to false is obeyed."""
    url, run_id = audited
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run("export", "mlflow", run_id, "--db", url, "--tracking-uri", "store/mlruns")
    assert code == 0, stderr
    assert (tmp_path / "store" / "mlruns").as_uri() in stdout
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    assert resolve_tracking_uri(None) == (tmp_path / "mlruns").as_uri()  # the default: ./mlruns
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    code, _, stderr = run("export", "mlflow", run_id, "--db", url, "--tracking-uri", "elsewhere")
    assert code == 2 and stderr.count("\n") == 1 and "MLFLOW_ALLOW_FILE_STORE=false" in stderr


def test_export_mistakes_are_one_line(
    audited: tuple[str, int], file_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, run_id = audited
    code, _, stderr = run("export", "mlflow", 999, "--db", url, "--tracking-uri", file_store)
    assert code == 2 and stderr.count("\n") == 1 and "no run 999" in stderr
    if importlib.util.find_spec("alembic") is None:  # mlflow-skinny: no database backend
        code, _, stderr = run("export", "mlflow", run_id, "--db", url, "--tracking-uri", f"sqlite:///{tmp_path}/m.db")
        assert code == 2 and stderr.count("\n") == 1 and "needs the full MLflow package (pip install mlflow" in stderr
    for name in ("mlflow", "mlflow.entities", "mlflow.exceptions", "mlflow.tracking"):
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were not installed
    code, _, stderr = run("export", "mlflow", run_id, "--db", url, "--tracking-uri", file_store)
    assert (
        code == 2
        and stderr.strip()
        == "error: exporting to MLflow needs mlflow, which is not installed: pip install 'bastion[mlflow]'"
    )


def test_keys_are_made_mlflow_safe() -> None:
    assert mlflow_key("pgd@8/255") == "pgd_8_255"
    assert mlflow_key("tpr_at_fpr_1e-3") == "tpr_at_fpr_1e-3"
    assert mlflow_key("..up") == "_..up" and mlflow_key("") == "_"
    assert mlflow_key("résumé: a b") == "r_sum___a_b"
    # keys that clean to the same prefix stay apart, in plan order
    assert _scenario_keys(["fgsm@0.1", "fgsm_0.1", "fgsm 0.1", "pgd"]) == {
        "fgsm@0.1": "fgsm_0.1",
        "fgsm_0.1": "fgsm_0.1_2",
        "fgsm 0.1": "fgsm_0.1_3",
        "pgd": "pgd",
    }
