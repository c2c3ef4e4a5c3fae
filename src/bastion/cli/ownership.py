"""`bastion ownership` and `bastion watermark embed|verify`: can the owner prove a model is theirs?

`bastion ownership` runs what an audit's `ownership` scenario runs (the same kind, the same suspects)
or, with --suspect, fits dataset inference on the owner's model and tests the given checkpoints.
`bastion watermark embed` trains a watermarked model like the given one and writes its secret key;
`bastion watermark verify` tests a suspect checkpoint against a key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion._atomic import write_json
from bastion.audit import Scenario
from bastion.audit.kinds.ownership import OwnershipSettings
from bastion.cli._common import JsonOpt, QuietOpt, out, progress_bar
from bastion.cli._target import ModelSource, takes_model
from bastion.cli.lifecycle import _report, _run
from bastion.core.errors import ConfigError
from bastion.core.ops import resolve_device
from bastion.core.params import parse_params
from bastion.core.registry import DEFENSES
from bastion.defenses.ownership import DatasetInference, Watermark, WatermarkKey
from bastion.defenses.ownership.keyfile import load_key, save_key
from bastion.models import CheckpointMeta, load_checkpoint, save_checkpoint
from bastion.report import format_metric

__all__ = ["ownership", "watermark_app"]

ParamsArg = Annotated[
    list[str] | None,
    typer.Argument(help="the method's parameters as key=value, e.g. n=100 wm_batch=2", show_default=False),
]
SeedOpt = Annotated[int, typer.Option(help="seeds the key, the models trained and the random draws")]


def _p(v: float | None) -> str:
    return "–" if v is None else ("0" if v == 0 else f"{v:.3g}")


@takes_model(external=False)
def ownership(
    params: ParamsArg = None,
    *,
    source: ModelSource,
    method: Annotated[str, typer.Option(help="ownership method (`bastion list defenses`, family ownership)")] = (
        "dataset-inference"
    ),
    suspect: Annotated[
        list[Path] | None,
        typer.Option(
            "--suspect", help="a suspect checkpoint to test (repeatable; dataset inference)", show_default=False
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="test images used: half public points, half the thief's data")] = 1000,
    finetune_epochs: Annotated[int, typer.Option(help="FTAL epochs of the fine-tuned suspect")] = 2,
    prune: Annotated[float, typer.Option(help="share of weights the pruned suspect loses")] = 0.5,
    fit_points: Annotated[int, typer.Option(help="dataset inference: points per side the regressor fits on")] = 200,
    test_points: Annotated[
        int, typer.Option(help="dataset inference: points per side each suspect is tested on")
    ] = 100,
    seed: SeedOpt = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Ownership: does a suspect model derive from this one (or from its training data)?

    Without --suspect, marks the model (watermark, blackmarks) or fits dataset inference on it, makes
    the suspects a thief would hold (the marked model, fine-tuned on the thief's data, pruned) and an
    independent model, and prints each suspect's p-value. With --suspect (dataset inference only),
    fits the regressor on the model's own training points and tests each given checkpoint. A p-value
    below 0.01 claims ownership.
    """
    cls = DEFENSES.get(method, family="ownership")
    kwargs = parse_params(cls, params or [])
    cls(**kwargs)  # checks the parameters before anything loads
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    if suspect and method != "dataset-inference":
        raise ConfigError(
            f"--suspect tests checkpoints with dataset inference; a {method} suspect is tested against its key: "
            "bastion watermark verify --key KEY --checkpoint SUSPECT"
        )
    target = source.target()
    settings = OwnershipSettings(
        params=kwargs, finetune_epochs=finetune_epochs, prune=prune, fit_points=fit_points, test_points=test_points
    )
    if not suspect:
        rows = _run("ownership", [Scenario(method, "ownership", method, n, settings)], target, seed, quiet)
        record = rows[0]["record"]
        header = (
            f"[bold]ownership[/bold] ({method}) on {target.model_name}: {record['n_eval']} evaluation images, "
            f"{record['n_thief']} images of the thief's"
        )
        table = [(name, s) for name, s in record["suspects"].items()]
        _report([(["statistic", "p_value", "ber", "clean_accuracy", "queries"], table)], header, rows, target, json_out)
        return
    di: DatasetInference = cls(seed=seed, **kwargs)
    x_mem, y_mem = target.members(target.n_members)
    x_pub, y_pub = target.test(min(n, target.dataset.x_test.shape[0]))
    f, t = fit_points, test_points
    if f + t > min(x_mem.shape[0], x_pub.shape[0]):
        raise ConfigError(f"--fit-points + --test-points = {f + t} exceeds the private or public points available")
    state = di.fit(target.victim, x_mem[:f], y_mem[:f], x_pub[:f], y_pub[:f])
    results: list[dict[str, Any]] = []
    with progress_bar("ownership", quiet=quiet):
        for path in suspect:
            model, _ = load_checkpoint(path, device=target.victim.device)
            v = target.victim.like(model)
            res = di.verify(v, state, x_mem[f : f + t], y_mem[f : f + t], x_pub[f : f + t], y_pub[f : f + t])
            results.append({"suspect": str(path), **res.to_dict()})
    out.print(
        f"[bold]dataset inference[/bold] from {target.model_name}: regressor on {f} private and {f} public points, "
        f"{t} of each tested",
        highlight=False,
    )
    for r in results:
        out.print(f"  {r['suspect']}: t = {r['statistic']:.3g}, p = {_p(r['p_value'])}", highlight=False)
    if json_out is not None:
        write_json(json_out, {"model": target.model_name, "data": target.data, "suspects": results})


watermark_app = typer.Typer(
    name="watermark",
    help="Backdoor watermarks (Adi et al. 2018): embed one in a model like yours, verify a suspect against the key.",
    no_args_is_help=True,
)


@watermark_app.command("embed")
@takes_model(external=False, without=("data",))
def embed(
    params: ParamsArg = None,
    *,
    source: ModelSource,
    out_path: Annotated[Path, typer.Option("--out", help="the watermarked checkpoint to write")] = Path(
        "watermarked.safetensors"
    ),
    key_path: Annotated[Path, typer.Option("--key", help="the secret key file to write")] = Path("watermark.key"),
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a model like the checkpoint's (architecture, recipe, training images) with a watermark key
    in every batch; write it and the key. Patch keys stamp test images and take their null rate from
    the checkpoint's own model, which never saw the key."""
    kwargs = parse_params(Watermark, params or [])
    wm = Watermark(seed=seed, **kwargs)
    target = source.target()
    if target.trainer is None:
        raise ConfigError(f"{target.model_name} cannot be retrained: its architecture or recipe is unknown")
    ds = target.dataset
    key = wm.make_key(tuple(ds.x_test.shape[1:]), target.victim.num_classes, x_pool=ds.x_test, y_pool=ds.y_test)  # type: ignore[arg-type]
    x, y = target.members(target.n_members)
    with progress_bar("watermark", quiet=quiet) as progress:
        model = target.train_fresh(x, y, seed=seed, progress=progress, batch=wm.batch_edit(key))
    if key.kind == "patch":
        key = wm.calibrate(key, [target.victim])
    marked = target.victim.like(model)
    res = wm.verify(marked, key, x_test=ds.x_test, y_test=ds.y_test)
    meta = CheckpointMeta.from_dict(target.model_meta, source=target.model_name)
    meta = replace(meta, clean_accuracy=res.clean_accuracy, recipe={**meta.recipe, "watermark": wm.params()})
    save_checkpoint(out_path, model, meta)
    save_key(key_path, key, method="watermark", params=wm.params())
    before = float((target.victim.predict(ds.x_test).cpu() == ds.y_test).double().mean())
    out.print(
        f"[bold]watermark[/bold] ({key.kind} key of {key.labels.numel()}) in {out_path}: key agreement "
        f"{res.matches}/{res.n}, p = {_p(res.p_value)}; clean accuracy {format_metric('accuracy', res.clean_accuracy)} "
        f"(unmarked {format_metric('accuracy', before)}); key written to {key_path}",
        highlight=False,
    )


@watermark_app.command("verify")
@takes_model(external=False)
def verify(
    key_path: Annotated[Path, typer.Option("--key", help="the secret key file (from `bastion watermark embed`)")],
    *,
    source: ModelSource,
    json_out: JsonOpt = None,
) -> None:
    """Test a suspect checkpoint against a watermark key: agreements with the key labels, the exact
    binomial p-value and its interval; p < 0.01 claims ownership."""
    resolve_device(source.device)  # an absent device is named before the key is read
    method, params, key = load_key(key_path)
    if method != "watermark" or not isinstance(key, WatermarkKey):
        raise ConfigError(f"{key_path} holds a {method} key, not a watermark key")
    target = source.target()
    wm = Watermark(**params)
    res = wm.verify(target.victim, key, x_test=target.dataset.x_test, y_test=target.dataset.y_test)
    lo, hi = res.interval or (0.0, 1.0)
    out.print(
        f"[bold]watermark[/bold] on {target.model_name}: {res.matches}/{res.n} key labels (95% interval "
        f"{lo:.3f}-{hi:.3f}, null rate {res.p0:.3f}), p = {_p(res.p_value)} -> "
        f"{'ownership claimed' if res.claimed else 'no claim'}; clean accuracy "
        f"{format_metric('accuracy', res.clean_accuracy)}",
        highlight=False,
    )
    if json_out is not None:
        write_json(json_out, {"model": target.model_name, "key": str(key_path), **res.to_dict()})
