"""What the commands that attack a deployed model share: its options and how it is loaded with its data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from bastion.core.errors import ConfigError, DataError
from bastion.data import Dataset, load_dataset
from bastion.deploy import DeployedModel, EndpointModel, OnnxModel

__all__ = [
    "BatchOpt",
    "EndpointOpt",
    "LoadedDeployed",
    "OnnxOpt",
    "RateLimitOpt",
    "RetriesOpt",
    "TimeoutOpt",
    "load_deployed",
]

OnnxOpt = Annotated[
    Path | None,
    typer.Option(
        "--onnx", help="attack an ONNX file (`bastion export onnx`) as deployed: black-box only", show_default=False
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="attack an HTTP endpoint speaking bastion's JSON protocol (docs/deployed.md): black-box only",
        show_default=False,
    ),
]
BatchOpt = Annotated[int, typer.Option("--endpoint-batch", help="the most images in one request to --endpoint")]
RateLimitOpt = Annotated[
    float | None,
    typer.Option("--rate-limit", help="the most requests per second to --endpoint", show_default=False),
]
RetriesOpt = Annotated[int, typer.Option("--retries", help="retries of a failed request to --endpoint (back-off)")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="seconds a request to --endpoint may take")]


@dataclass(frozen=True)
class LoadedDeployed:
    """A deployed model and the data set it is attacked on."""

    model: DeployedModel
    dataset: Dataset
    data: str
    split_seed: int


def load_deployed(
    *,
    onnx: Path | None,
    endpoint: str | None,
    data: str | None,
    data_root: Path | None,
    batch: int = 64,
    rate_limit: float | None = None,
    retries: int = 3,
    timeout: float = 30.0,
) -> LoadedDeployed:
    """The ONNX file or endpoint, with the data set it says it was trained on (or `--data`), checked together.

    The split seed is the one recorded in the ONNX metadata or given by the endpoint (default 0)."""
    if onnx is not None and endpoint is not None:
        raise ConfigError("give --onnx FILE or --endpoint URL, not both")
    model: DeployedModel
    if onnx is not None:
        model = OnnxModel(onnx)
    else:
        assert endpoint is not None
        ds = None if data is None else load_dataset(data, root=data_root, seed=0)
        model = EndpointModel(
            endpoint,
            input_shape=None if ds is None else ds.input_shape,
            num_classes=None if ds is None else ds.num_classes,
            batch_size=batch,
            rate_limit=rate_limit,
            retries=retries,
            timeout=timeout,
        )
    data = data or model.info.get("dataset")
    if data is None:
        raise ConfigError(f"--data is needed: {model.name} does not say which data set it classifies")
    seed = int(model.info.get("split_seed", 0))
    ds = load_dataset(data, root=data_root, seed=seed)
    if tuple(ds.input_shape) != model.input_shape or ds.num_classes != model.num_classes:
        raise DataError(
            f"data set {data!r} has images of shape {tuple(ds.input_shape)} in {ds.num_classes} classes, but "
            f"{model.name} takes {model.input_shape} and answers {model.num_classes} classes"
        )
    return LoadedDeployed(model, ds, data, seed)


def refuse_model_options(**given: object) -> None:
    """--onnx and --endpoint are the model: refuse the options of an in-process model beside them."""
    clash = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if clash:
        raise ConfigError(f"{' and '.join(clash)} cannot go with --onnx or --endpoint, which are the model already")
