"""`bastion eval`: clean accuracy of a model on a data set's test split."""

from __future__ import annotations

from typing import Annotated

import typer

from bastion._atomic import write_json
from bastion.cli._common import JsonOpt, out
from bastion.cli._target import ModelSource, takes_model


@takes_model()
def eval_(
    *,
    source: ModelSource,
    split_seed: Annotated[int | None, typer.Option(help="split seed (default: the checkpoint's)")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Measure a model's clean accuracy on the test split of a data set."""
    loaded = source.load(split_seed=split_seed)
    victim, ds = loaded.victim, loaded.dataset
    correct = (victim.predict(ds.x_test).cpu() == ds.y_test).sum().item()
    n = ds.y_test.shape[0]
    result = {
        "accuracy": correct / n,
        "n": n,
        "checkpoint": str(source.checkpoint) if source.checkpoint is not None else None,
        "model": source.model,
        "data": loaded.data,
        "split_seed": loaded.split_seed,
    }
    out.print(f"accuracy {result['accuracy']:.2%} on {n} test images of {loaded.data}", highlight=False)
    if json_out is not None:
        write_json(json_out, result)
