"""`bastion eval`: clean accuracy of a model on a data set's test split."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bastion._atomic import write_json
from bastion.cli._common import JsonOpt, out
from bastion.cli._target import ModelSource, takes_model
from bastion.deploy import DeployedModel, EndpointModel


@takes_model(deployed=True)
def eval_(
    *,
    source: ModelSource,
    split_seed: Annotated[int | None, typer.Option(help="split seed (default: the checkpoint's)")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Measure a model's clean accuracy on the test split of a data set.

    With --onnx or --endpoint, from the deployed model's labels: one query per test image.
    """
    loaded = source.load(split_seed=split_seed)
    victim, ds = loaded.victim, loaded.dataset
    correct = (victim.predict(ds.x_test).cpu() == ds.y_test).sum().item()
    n = ds.y_test.shape[0]
    result: dict[str, Any] = {
        "accuracy": correct / n,
        "n": n,
        "checkpoint": str(source.checkpoint) if source.checkpoint is not None else None,
        "model": source.model,
        "data": loaded.data,
        "split_seed": loaded.split_seed,
    }
    line = f"accuracy {result['accuracy']:.2%} on {n} test images of {loaded.data}"
    if isinstance(victim, DeployedModel):
        result.update(model=victim.name, queries=n, deployed=victim.describe())
        line += f", {n} queries to {victim.name}"
        if isinstance(victim, EndpointModel):
            result["deployed"]["requests"] = requests = victim.stats.to_dict()
            line += f" in {requests['requests']} requests ({requests['retries']} retried)"
            victim.close()
    out.print(line, highlight=False)
    if json_out is not None:
        write_json(json_out, result)
