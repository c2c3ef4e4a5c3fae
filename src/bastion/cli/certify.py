"""`bastion certify`: certified L2 accuracy of a model's smoothed classifier (randomized smoothing)."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from bastion._atomic import write_json
from bastion.cli._common import JsonOpt, QuietOpt, out, progress_bar
from bastion.cli._target import ModelSource, takes_model
from bastion.core.errors import ConfigError
from bastion.core.victim import Victim
from bastion.defenses.certify import Smoothed
from bastion.models.checkpoint import CheckpointMeta


def _radii(text: str) -> list[float]:
    try:
        radii = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        radii = []
    if not radii or any(not math.isfinite(r) or r < 0 for r in radii):
        raise ConfigError(f"--radii takes comma-separated L2 radii >= 0, e.g. 0,0.5,1.0; got {text!r}")
    return sorted(set(radii))


def _sigma(sigma: float | None, meta: CheckpointMeta | None) -> float:
    """--sigma, or the noise the checkpoint was trained with by the `gaussian` recipe."""
    if sigma is None:
        recipe = meta.recipe if meta is not None else {}
        if recipe.get("name") != "gaussian":
            raise ConfigError(
                "give --sigma, the noise level to certify at (e.g. 0.25, the sigma the model was trained with)"
            )
        sigma = float(recipe["sigma"])
    if not math.isfinite(sigma) or sigma <= 0:
        raise ConfigError(f"--sigma must be a positive number (the noise's standard deviation); got {sigma!r}")
    return sigma


@takes_model()
def certify(
    *,
    source: ModelSource,
    n: Annotated[int, typer.Option("--n", help="number of test images to certify (the first n)")] = 100,
    sigma: Annotated[
        float | None,
        typer.Option(help="noise standard deviation (default: a gaussian-recipe checkpoint's training sigma)"),
    ] = None,
    n0: Annotated[int, typer.Option("--n0", help="noise samples per image that pick the class")] = 100,
    samples: Annotated[
        int, typer.Option(help="noise samples per image that bound its probability (the paper's n)")
    ] = 100_000,
    alpha: Annotated[float, typer.Option(help="failure probability of each certificate")] = 0.001,
    radii: Annotated[str, typer.Option(help="L2 radii at which to report certified accuracy")] = "0,0.5,1.0",
    batch_size: Annotated[int, typer.Option(help="noisy images per forward pass")] = 1000,
    seed: Annotated[int, typer.Option(help="seeds the noise: same seed, same certificates")] = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Certify a model's first N test images by randomized smoothing (Cohen et al., ICML 2019)."""
    radius_list = _radii(radii)
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    if sigma is not None:
        _sigma(sigma, None)  # reject a bad value before loading anything
    loaded = source.load()
    victim, ds = loaded.victim, loaded.dataset
    assert isinstance(victim, Victim)  # certify takes no --onnx or --endpoint
    smoothed = Smoothed(victim, sigma=_sigma(sigma, loaded.meta), batch_size=batch_size, seed=seed)
    x, y = ds.x_test[:n], ds.y_test[:n]
    victim.batch_size = max(victim.batch_size, batch_size)  # one forward pass per batch of noisy images
    with progress_bar("smoothing", quiet=quiet) as progress:
        result = smoothed.certify(x, y, n0=n0, n=samples, alpha=alpha, progress=progress)
    report: dict[str, Any] = result.to_dict(radius_list)
    report.update(
        data=loaded.data,
        checkpoint=str(source.checkpoint) if source.checkpoint is not None else None,
        model=source.model,
    )
    _print(report)
    if json_out is not None:
        write_json(json_out, report)


def _print(d: dict[str, Any]) -> None:
    out.print(
        f"[bold]randomized smoothing[/bold] (sigma={d['sigma']:g}, n0={d['n0']}, n={d['n']}, alpha={d['alpha']:g})",
        highlight=False,
    )
    out.print(f"  images              {d['images']} of {d['data']}", highlight=False)
    out.print(f"  smoothed accuracy   {d['accuracy']:.2%}", highlight=False)
    out.print(f"  abstain rate        {d['abstain_rate']:.2%}", highlight=False)
    out.print(f"  mean cert. radius   {d['average_certified_radius']:.4g}", highlight=False)
    out.print(f"  largest possible    {d['max_radius']:.4g} (all {d['n']} samples agree)", highlight=False)
    out.print("  certified accuracy", highlight=False)
    for row in d["certified_accuracy"]:
        out.print(f"    radius {row['radius']:<10.3g}{row['accuracy']:>8.2%}", highlight=False)
    out.print(f"  seconds             {d['seconds']:.1f}", highlight=False)
