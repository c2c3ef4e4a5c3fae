"""`bastion eval`: clean accuracy of a model on a data set's test split."""

from __future__ import annotations

from typing import Annotated

import typer

from bastion._atomic import write_json
from bastion.cli._common import (
    BoundsOpt,
    CheckpointOpt,
    DataOpt,
    DataRootOpt,
    DeviceOpt,
    JsonOpt,
    LogitsKeyOpt,
    MeanOpt,
    ModelOpt,
    StdOpt,
    WeightsOpt,
    load_victim_and_data,
    out,
)


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
    json_out: JsonOpt = None,
) -> None:
    """Measure a model's clean accuracy on the test split of a data set."""
    loaded = load_victim_and_data(
        checkpoint=checkpoint,
        model=model,
        weights=weights,
        mean=mean,
        std=std,
        bounds=bounds,
        logits_key=logits_key,
        data=data,
        data_root=data_root,
        device=device,
        split_seed=split_seed,
    )
    victim, ds = loaded.victim, loaded.dataset
    correct = (victim.predict(ds.x_test).cpu() == ds.y_test).sum().item()
    n = ds.y_test.shape[0]
    result = {
        "accuracy": correct / n,
        "n": n,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "model": model,
        "data": loaded.data,
        "split_seed": loaded.split_seed,
    }
    out.print(f"accuracy {result['accuracy']:.2%} on {n} test images of {loaded.data}", highlight=False)
    if json_out is not None:
        write_json(json_out, result)
