"""`bastion export`: hand a stored run or a model to other tools. `bastion export mlflow RUN_ID` logs a
run as an MLflow run (docs/export.md); `bastion export onnx --checkpoint CKPT` writes the model as an ONNX
file that maps images in [0, 1] to logits (docs/deployed.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion._atomic import sha256_file
from bastion.audit import presenters
from bastion.cli._common import CheckpointOpt, DataRootOpt, out
from bastion.cli.runs import DbOpt, open_store
from bastion.core.errors import ConfigError, DataError
from bastion.data import load_dataset
from bastion.deploy import export_onnx
from bastion.deploy.onnxfile import OPSET
from bastion.models.checkpoint import load_checkpoint
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


@export_app.command("onnx")
def onnx(
    checkpoint: CheckpointOpt = None,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="the ONNX file to write")] = Path("model.onnx"),
    opset: Annotated[int, typer.Option(help="the ONNX opset")] = OPSET,
    data_root: DataRootOpt = None,
) -> None:
    """Export a checkpoint to ONNX: its normalisation inside, a dynamic batch axis, bastion's metadata."""
    if checkpoint is None:
        raise ConfigError("give the model to export with --checkpoint CKPT")
    model, meta = load_checkpoint(checkpoint)
    try:  # the class names, where the data set is at hand (the embedded ones always are)
        classes: list[str] | None = list(load_dataset(meta.dataset, root=data_root, seed=meta.split_seed).classes)
    except (ConfigError, DataError):
        classes = None
    path = export_onnx(
        model,
        out_path,
        input_shape=meta.input_shape,
        bounds=meta.bounds,
        opset=opset,
        metadata={
            "dataset": meta.dataset,
            "split_seed": meta.split_seed,
            "classes": classes,
            "architecture": meta.architecture,
            "clean_accuracy": meta.clean_accuracy,
            "checkpoint": checkpoint.name,
            "checkpoint_sha256": sha256_file(checkpoint),
            "checkpoint_meta": meta.to_dict(),
        },
    )
    out.print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, sha256 {sha256_file(path)[:12]})", highlight=False)
