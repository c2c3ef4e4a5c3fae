"""`bastion eval`: clean accuracy of a model on a data set's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion._atomic import write_json
from bastion.cli._common import (
    BoundsOpt,
    CheckpointOpt,
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    LogitsKeyOpt,
    MeanOpt,
    ModelOpt,
    StdOpt,
    WeightsOpt,
    check_shape,
    load_target,
    out,
)
from bastion.core.errors import ConfigError
from bastion.core.ops import resolve_device
from bastion.core.victim import Victim
from bastion.data import load_dataset


def eval_(
    checkpoint: CheckpointOpt = None,
    data: DataOpt = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bounds: BoundsOpt = "0,1",
    logits_key: LogitsKeyOpt = None,
    split_seed: Annotated[int | None, typer.Option(help="split seed (default: the checkpoint's)")] = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")] = None,
) -> None:
    """Measure a model's clean accuracy on the test split of a data set."""
    dev = resolve_device(device)
    net, meta = load_target(
        checkpoint=checkpoint,
        model=model,
        weights=weights,
        mean=mean,
        std=std,
        bounds=bounds,
        logits_key=logits_key,
        device=str(dev),
    )
    if data is None:
        if meta is None:
            raise ConfigError("--data is needed with --model (which data set should the model be evaluated on?)")
        data = meta.dataset
    seed = split_seed if split_seed is not None else (meta.split_seed if meta is not None else 0)
    ds = load_dataset(data, root=data_root, seed=seed)
    check_shape(meta, ds.input_shape, data)
    victim = Victim(net, input_shape=ds.input_shape, device=dev)
    correct = (victim.predict(ds.x_test).cpu() == ds.y_test).sum().item()
    n = ds.y_test.shape[0]
    result = {
        "accuracy": correct / n,
        "n": n,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "model": model,
        "data": data,
        "split_seed": seed,
    }
    out.print(f"accuracy {result['accuracy']:.2%} on {n} test images of {data}", highlight=False)
    if json_out is not None:
        write_json(json_out, result)
