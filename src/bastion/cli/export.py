"""`bastion export onnx`: a checkpoint as an ONNX file that maps images in [0, 1] to logits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion._atomic import sha256_file
from bastion.cli._common import CheckpointOpt, DataRootOpt, out
from bastion.core.errors import ConfigError, DataError
from bastion.data import load_dataset
from bastion.deploy import export_onnx
from bastion.deploy.onnxfile import OPSET
from bastion.models.checkpoint import load_checkpoint

__all__ = ["export_app"]

export_app = typer.Typer(
    name="export",
    help="Write a model in a deployment format (ONNX) that `bastion attack --onnx` and `bastion audit --onnx` read.",
    no_args_is_help=True,
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
