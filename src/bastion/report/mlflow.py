"""Export a stored audit run to MLflow (https://mlflow.org): its provenance as parameters, every
scenario's stored metrics, tags to find it by, and the HTML report, `summary.json` and plan as
artifacts. MLflow is an optional dependency (`pip install 'bastion[mlflow]'`, which brings
`mlflow-skinny`), imported only here and only when an export runs.

The tracking URI is the one given, else `$MLFLOW_TRACKING_URI`, else `./mlruns` (a local file store).
MLflow 3 keeps its file store in maintenance mode and refuses to open one unless
`MLFLOW_ALLOW_FILE_STORE=true`; an export to a file store sets that variable for its own duration
when it is unset (a value the user set, such as `false`, is respected). A `sqlite:///` URI needs the
full `mlflow` package (its database backend needs alembic, which `mlflow-skinny` lacks); an
`http(s)://` MLflow server works with either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.core.errors import ConfigError, StoreError, require_extra
from bastion.report.html import render
from bastion.report.sections import Presenter
from bastion.report.summary import by_family, summarize
from bastion.store import RunRow, Store

__all__ = [
    "DEFAULT_EXPERIMENT",
    "MlflowExport",
    "export_mlflow",
    "mlflow_key",
    "mlflow_payload",
    "resolve_tracking_uri",
]

DEFAULT_EXPERIMENT = "bastion"
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
# MLflow accepts letters, digits, `_ - . / space` (and `:` except on Windows) in a key; bastion keeps to
# the portable `[A-Za-z0-9_.-]`, so no key becomes a sub-folder of a file store.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_.\-]")
_BATCH = 1000  # MLflow takes at most 1,000 metrics, params and tags in one log_batch call
_PARAMS_PER_BATCH = 100


@dataclass(frozen=True)
class MlflowExport:
    """What an export logged, and where.

    Attributes:
        run_id: the new MLflow run's id.
        experiment_id: the MLflow experiment holding it.
        tracking_uri: the tracking URI it was logged to (a path given made an absolute `file:` URI).
        params: the parameters logged, as strings.
        metrics: the metrics logged.
        tags: the tags set (MLflow adds its own `mlflow.*` tags beside them).
        artifacts: the artifact files logged, relative to the run's artifact root.
    """

    run_id: str
    experiment_id: str
    tracking_uri: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[str]


def mlflow_key(name: str) -> str:
    """`name` as an MLflow key: every character outside `[A-Za-z0-9_.-]` becomes `_`, and a key that
    would be empty or start with a dot gets a leading `_` (MLflow refuses names that a file system
    would read as another path)."""
    key = _NOT_ALLOWED.sub("_", name)
    return key if key and not key.startswith(".") else "_" + key


def _scenario_keys(keys: list[str]) -> dict[str, str]:
    """Each scenario key -> its MLflow prefix, unique: a second key that cleans to a taken prefix gets
    `_2`, `_3`, ... in plan order (e.g. `fgsm@0.1` and `fgsm_0.1` become `fgsm_0.1` and `fgsm_0.1_2`)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for key in keys:
        base = candidate = mlflow_key(key)
        i = 1
        while candidate in taken:
            i += 1
            candidate = f"{base}_{i}"
        taken.add(candidate)
        out[key] = candidate
    return out


def run_uid(run: RunRow) -> str:
    """What tells one stored run from every other, across databases: its identity (model, data, split,
    plan, seed), its id and when it started."""
    text = f"{run.identity}|{run.id}|{run.started_at.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def mlflow_payload(
    run: RunRow, summary: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, float], dict[str, str], dict[str, datetime]]:
    """(params, metrics, tags, metric times) of a stored run as the export logs them.

    Params: `plan`, `plan_sha256`, `seed`, `data`, `split_seed`, `samples`, `model`, `model_sha256`,
    `device`, `host`, `version.<package>` for each version recorded, and `scenario.<prefix>` = the
    scenario's key for each scenario. Metrics: `clean_accuracy` and `<prefix>.<metric>` for every
    number a scenario stored (None and non-numbers are left out), `<prefix>` being the scenario's key
    made MLflow-safe (`mlflow_key`, unique). Each metric is timed when its scenario finished.
    """
    params = {
        "plan": run.plan_name,
        "plan_sha256": run.plan_sha256,
        "seed": str(run.seed),
        "data": run.data,
        "split_seed": str(run.split_seed),
        "samples": str(len(run.sample_indices)),
        "model": run.model.name,
        "model_sha256": run.model.sha256,
        "device": run.device,
        "host": run.host,
    }
    params |= {f"version.{mlflow_key(k)}": str(v) for k, v in run.versions.items()}
    prefixes = _scenario_keys([r.key for r in run.results])
    params |= {f"scenario.{prefixes[r.key]}": r.key for r in run.results}
    metrics = {"clean_accuracy": float(run.clean_accuracy)}
    times = {"clean_accuracy": run.started_at}
    for r in run.results:
        for name, value in r.metrics.items():
            number = _number(value)
            if number is not None:
                key = f"{prefixes[r.key]}.{mlflow_key(name)}"
                metrics[key] = number
                times[key] = r.created_at
    families = list(by_family(run))
    tags = {
        "bastion.run_id": str(run.id),
        "bastion.run_uid": run_uid(run),
        "bastion.status": run.status,
        "bastion.model": run.model.name,
        "bastion.plan": run.plan_name,
        "bastion.families": ",".join(families),
        "mlflow.note.content": _note(run, summary),
    }
    return params, metrics, tags, times


def _note(run: RunRow, summary: Mapping[str, Any]) -> str:
    """The MLflow run's description: the scorecard, one line per card."""
    lines = [f"bastion audit run {run.id} of {run.model.name}, plan {run.plan_name} ({run.status})", ""]
    lines += [f"- {c['family']}: {c['headline_text']} {c['label']}" for c in summary["scorecard"]]
    return "\n".join(lines)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: `uri`, else `$MLFLOW_TRACKING_URI`, else `./mlruns`; a plain path becomes
    an absolute `file:` URI."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if urlsplit(uri).scheme == "" or re.match(r"^[A-Za-z]:[\\/]", uri):
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def _is_file_store(uri: str) -> bool:
    return urlsplit(uri).scheme == "file"


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 opens a file store only with MLFLOW_ALLOW_FILE_STORE=true: set it for the export when
    the user has not set it either way."""
    if not _is_file_store(uri) or ALLOW_FILE_STORE in os.environ:
        yield
        return
    os.environ[ALLOW_FILE_STORE] = "true"
    try:
        yield
    finally:
        os.environ.pop(ALLOW_FILE_STORE, None)


def _ms(t: datetime) -> int:
    if t.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _one_line(e: BaseException) -> str:
    text = str(getattr(e, "message", None) or e).strip().splitlines()
    return text[0] if text else type(e).__name__


def export_mlflow(
    store: Store,
    run_id: int,
    presenters: Mapping[str, Presenter],
    *,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    force: bool = False,
) -> MlflowExport:
    """Log stored run `run_id` as a new MLflow run in `experiment` (created when missing).

    A run already exported to that experiment (found by its `bastion.run_uid` tag; failed exports do not
    count) is refused with a `ConfigError` naming the MLflow run, unless `force`, which logs one more.

    Args:
        store: the results database holding the run.
        run_id: the stored run's id.
        presenters: how each family is reported (`bastion.audit.presenters()`), for the HTML report.
        tracking_uri: where to log (see `resolve_tracking_uri`).
        experiment: the MLflow experiment's name.
        force: log a second MLflow run for a run already exported.

    Raises:
        StoreError: no such run, or MLflow cannot be reached or refuses what is logged.
        ConfigError: MLflow is not installed, the tracking URI needs more of MLflow than is installed,
            the experiment is deleted, or the run was already exported (without `force`).
    """
    run = store.run(run_id)
    require_extra("mlflow", extra="mlflow", purpose="exporting to MLflow")
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    summary = summarize(run, presenters)
    params, metrics, tags, times = mlflow_payload(run, summary)
    failures = (MlflowException, OSError)  # what MLflow raises for a refused call, an unreachable server, a full disk
    with _file_store_allowed(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
        except ImportError as e:  # mlflow-skinny has no database backend (alembic and the rest are missing)
            raise ConfigError(
                f"the tracking URI {uri!r} needs the full MLflow package (pip install mlflow; missing: {e.name}); "
                "mlflow-skinny, which bastion[mlflow] installs, logs to a file store (--tracking-uri ./mlruns) "
                "or to an MLflow server (--tracking-uri http://HOST:5000)"
            ) from None
        except MlflowException as e:
            if _is_file_store(uri) and os.environ.get(ALLOW_FILE_STORE, "").lower() not in ("", "true", "1"):
                raise ConfigError(
                    f"MLflow refuses the file store {uri} because {ALLOW_FILE_STORE}={os.environ[ALLOW_FILE_STORE]}; "
                    f"set {ALLOW_FILE_STORE}=true, or log to an MLflow server"
                ) from None
            raise StoreError(f"MLflow at {uri}: {_one_line(e)}") from None
        except ValueError as e:  # a tracking URI or an MLFLOW_* variable MLflow cannot parse
            raise ConfigError(f"MLflow cannot use the tracking URI {uri!r}: {_one_line(e)}") from None
        try:
            experiment_id = _experiment(client, experiment)
            if not force:
                _refuse_twice(client, experiment_id, experiment, tags["bastion.run_uid"], run_id)
            start = _ms(run.started_at)
            created = client.create_run(experiment_id, start_time=start, tags=tags, run_name=f"bastion-{run_id}")
        except failures as e:
            raise StoreError(f"MLflow at {uri}: {_one_line(e)}") from None
        mlrun_id = created.info.run_id
        try:
            param_list = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(param_list), _PARAMS_PER_BATCH):
                client.log_batch(mlrun_id, params=param_list[i : i + _PARAMS_PER_BATCH])
            metric_list = [Metric(k, v, _ms(times[k]), 0) for k, v in metrics.items()]
            for i in range(0, len(metric_list), _BATCH):
                client.log_batch(mlrun_id, metrics=metric_list[i : i + _BATCH])
            artifacts = _log_artifacts(client, mlrun_id, run, presenters, summary)
            end = _ms(run.ended_at if run.ended_at is not None else datetime.now(UTC))
            client.set_terminated(mlrun_id, "FINISHED", end_time=max(end, start))
        except BaseException as e:
            with suppress(*failures):  # marked failed, so that a retry is not refused as a second export
                client.set_terminated(mlrun_id, "FAILED")
            if isinstance(e, failures):
                raise StoreError(f"MLflow at {uri}: {_one_line(e)} (MLflow run {mlrun_id} marked FAILED)") from None
            raise
    return MlflowExport(mlrun_id, experiment_id, uri, params, metrics, tags, artifacts)


def _experiment(client: Any, name: str) -> str:
    """The id of the experiment called `name`, created when there is none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return str(client.create_experiment(name))
    if found.lifecycle_stage != "active":
        raise ConfigError(
            f"the MLflow experiment {name!r} is deleted; restore it (mlflow experiments restore) "
            "or pass another --experiment"
        )
    return str(found.experiment_id)


def _refuse_twice(client: Any, experiment_id: str, experiment: str, uid: str, run_id: int) -> None:
    found = client.search_runs([experiment_id], filter_string=f"tags.`bastion.run_uid` = '{uid}'")
    done = [r for r in found if r.info.status != "FAILED"]
    if done:
        raise ConfigError(
            f"bastion run {run_id} is already in the MLflow experiment {experiment!r} as run "
            f"{done[0].info.run_id}; pass --force to log it again"
        )


def _log_artifacts(
    client: Any, mlrun_id: str, run: RunRow, presenters: Mapping[str, Presenter], summary: dict[str, Any]
) -> list[str]:
    """The HTML report, `summary.json` and the plan as the run's artifacts (written to a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="bastion-mlflow-") as tmp:
        folder = Path(tmp)
        (folder / "report.html").write_text(render(run, presenters, summary), encoding="utf-8")
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (folder / "plan.yaml").write_text(run.plan_text, encoding="utf-8")
        client.log_artifacts(mlrun_id, str(folder))
        return sorted(p.name for p in folder.iterdir())
