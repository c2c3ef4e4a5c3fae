"""`bastion export`: hand a stored run to other tools. `bastion export mlflow RUN_ID` logs it as an
MLflow run (docs/export.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from bastion.audit import presenters
from bastion.cli._common import out
from bastion.cli.runs import DbOpt, open_store
from bastion.report.mlflow import DEFAULT_EXPERIMENT, export_mlflow

__all__ = ["export_app"]

export_app = typer.Typer(
    name="export",
    help="Hand a stored run or a model to other tools (MLflow, ...).",
    no_args_is_help=True,
)


@export_app.command("mlflow")
def mlflow(
    run_id: Annotated[int, typer.Argument(help="the stored run's id (printed by `bastion audit`)")],
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow tracking URI: a folder or file: URI (a file store), or http://HOST:PORT "
            "(default $MLFLOW_TRACKING_URI, else ./mlruns)",
            show_default=False,
        ),
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment, created when missing")] = DEFAULT_EXPERIMENT,
    force: Annotated[bool, typer.Option("--force", help="log the run again even if it was exported before")] = False,
    db: DbOpt = None,
) -> None:
    """Log a stored run to MLflow: parameters, each scenario's metrics, tags, the HTML report and summary.json."""
    with open_store(db) as store:
        done = export_mlflow(store, run_id, presenters(), tracking_uri=tracking_uri, experiment=experiment, force=force)
    out.print(
        f"run {run_id} -> MLflow run {done.run_id} (experiment {experiment!r}, id {done.experiment_id}) at "
        f"{done.tracking_uri}: {len(done.params)} params, {len(done.metrics)} metrics, "
        f"{len(done.artifacts)} artifacts",
        highlight=False,
    )
