"""`bastion attack NAME`: run one registered attack on a model's test images and summarise it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bastion._atomic import write_json
from bastion.attacks.evasion.checks import sanity_checks
from bastion.cli._common import JsonOpt, QuietOpt, console, out, progress_bar
from bastion.cli._target import ModelSource, takes_model
from bastion.core.errors import ConfigError, UnknownNameError
from bastion.core.params import parse_eps, parse_params
from bastion.core.random import random_targets
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.threat import ThreatModel
from bastion.core.victim import Victim
from bastion.defenses.postprocess import PostProcess, build_postprocessors
from bastion.deploy import DeployedModel, EndpointModel

# The other families' commands: `bastion attack NAME` runs evasion attacks only.
_FAMILY_COMMANDS = {
    "membership": "mia",
    "backdoor": "poison",
    "protection": "protect",
    "bitflip": "bitflip",
    "extraction": "extract --attack",
    "split-extraction": "sfl-extract --attack",
}

# Default budgets when --eps is not given: the literature's standard radii per image shape.
_DEFAULT_EPS = {("linf", 1): 0.3, ("linf", 3): 8 / 255, ("l2", 1): 2.0, ("l2", 3): 0.5}


def _parse_eps(text: str | None, norm: str, channels: int) -> float:
    if norm not in ("linf", "l2"):
        raise ConfigError(f"--norm must be linf or l2; got {norm!r}")
    if text is None:
        return _DEFAULT_EPS[(norm, 1 if channels == 1 else 3)]
    try:
        return parse_eps(text)
    except ConfigError as e:
        raise ConfigError(f"--{e}") from None


@takes_model(deployed=True)
def attack(
    name: Annotated[str, typer.Argument(help="attack name (`bastion list attacks`)")],
    params: Annotated[
        list[str] | None, typer.Argument(help="the attack's parameters as key=value", show_default=False)
    ] = None,
    *,
    source: ModelSource,
    n: Annotated[int, typer.Option("--n", help="number of test images to attack (the first n)")] = 500,
    eps: Annotated[
        str | None, typer.Option(help="budget, e.g. 0.3 or 8/255 (default: 0.3 / 8/255 L-inf, 2.0 / 0.5 L2)")
    ] = None,
    norm: Annotated[str, typer.Option(help="linf or l2")] = "linf",
    targeted: Annotated[bool, typer.Option(help="aim at a random wrong class per image (seeded)")] = False,
    max_queries: Annotated[
        int | None, typer.Option(help="per-image query budget for black-box attacks", show_default=False)
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds the attack and the target draw")] = 0,
    defense: Annotated[
        list[str] | None,
        typer.Option(
            "--defense",
            help="serve the black-box attack through an output post-processor, NAME or NAME:key=value,... "
            "(`bastion list defenses`); repeat to chain them in order",
            show_default=False,
        ),
    ] = None,
    checks: Annotated[bool, typer.Option(help="run the gradient-masking sanity checks")] = True,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Attack a model's first N test images; print robust accuracy, norms, queries and warnings."""
    try:
        cls = ATTACKS.get(name, family="evasion")  # the other families have their own commands
    except UnknownNameError:
        family = ATTACKS.family(name) if name in ATTACKS else ""
        if family not in _FAMILY_COMMANDS:
            raise
        raise UnknownNameError(
            f"{name} is not an evasion attack ({name!r} is in the {family} family): run it with "
            f"`bastion {_FAMILY_COMMANDS[family]} {name}`"
        ) from None
    kwargs = parse_params(cls, params or [])
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    defenses = build_postprocessors(defense or [])
    if defenses and cls.access == "white-box":
        raise ConfigError(
            f"--defense filters what a score or label API serves, but {name} is a white-box attack that uses the "
            "model's gradients, so it would bypass it; attack through it with a black-box attack (e.g. square)"
        )
    if source.deployed and cls.access == "white-box":
        raise ConfigError(
            f"{name} is a white-box attack and needs the model's gradients, but --onnx/--endpoint answer queries "
            "only; run a score-based (e.g. square) or decision-based (e.g. hsja) attack"
        )
    loaded = source.load()
    victim, ds = loaded.victim, loaded.dataset
    x, y = ds.x_test[:n], ds.y_test[:n]
    threat = ThreatModel(
        norm=norm,  # type: ignore[arg-type]
        eps=_parse_eps(eps, norm, ds.input_shape[0]),
        targeted=targeted,
        max_queries=max_queries,
    )
    atk = cls(threat=threat, seed=seed, **kwargs)
    targets = random_targets(y, ds.num_classes, seed) if targeted else None
    with progress_bar(name, quiet=quiet) as progress:
        result = atk.run(victim, x, y, target_labels=targets, progress=progress, postprocess=defenses)
        # the gradient-masking checks need the model's gradients: a deployed model has none to mask
        warnings = sanity_checks(atk, result, victim, x, y) if checks and isinstance(victim, Victim) else []
    report = _summary(result, warnings, data=loaded.data, source=source, defenses=defenses)
    if isinstance(victim, DeployedModel):
        report["model"] = victim.name
        report["deployed"] = victim.describe()
        if isinstance(victim, EndpointModel):
            report["deployed"]["requests"] = victim.stats.to_dict()
            victim.close()
    _print(report)
    if json_out is not None:
        write_json(json_out, report)


def _summary(
    result: AttackResult,
    warnings: list[str],
    *,
    data: str,
    source: ModelSource,
    defenses: list[PostProcess],
) -> dict[str, Any]:
    d = result.to_dict()
    d["defenses"] = [p.to_dict() for p in defenses]
    d["warnings"] = list(result.warnings) + warnings
    d["data"] = data
    d["checkpoint"] = str(source.checkpoint) if source.checkpoint is not None else None
    d["model"] = source.model
    return d


def _print(d: dict[str, Any]) -> None:
    t = d["threat"]
    params = ", ".join(f"{k}={v}" for k, v in d["params"].items())
    out.print(f"[bold]{d['attack']}[/bold] ({params})", highlight=False)
    out.print(f"  threat        {t['norm']} eps={t['eps']:.4g}{' targeted' if t['targeted'] else ''}", highlight=False)
    for p in d["defenses"]:
        args = ", ".join(f"{k}={v}" for k, v in p["params"].items())
        out.print(f"  defense       {p['name']}{f' ({args})' if args else ''}", highlight=False)
    if d.get("deployed"):
        served = d["deployed"]
        requests = served.get("requests")
        sent = f", {requests['requests']} requests, {requests['retries']} retried" if requests else ""
        out.print(f"  model         {served['name']} (answers {served['reveals']}{sent})", highlight=False)
    out.print(f"  images        {d['n']} of {d['data']}", highlight=False)
    out.print(f"  clean         {d['clean_accuracy']:.2%}", highlight=False)
    out.print(f"  robust        {d['robust_accuracy']:.2%}", highlight=False)
    rate = d["success_rate"]
    out.print(f"  success rate  {'n/a' if rate is None else f'{rate:.2%}'}", highlight=False)
    extra = d["extra"]
    if extra.get("fooling_rate_heldout") is not None:  # a universal perturbation: the papers' numbers
        out.print(
            f"  fooling rate  {extra['fooling_rate_heldout']:.2%} of the {extra['n_heldout']} held-out images, "
            f"correct or not ({extra['fooling_rate_fit']:.2%} of the {extra['n_fit']} that fit v)",
            highlight=False,
        )
        out.print(
            f"  under v       accuracy {extra['accuracy_under_v_heldout']:.2%} on the held-out images "
            f"(clean {extra['clean_accuracy_heldout']:.2%})",
            highlight=False,
        )
    if extra.get("surrogate_success_rate") is not None:  # a transfer attack
        out.print(f"  surrogate     success rate {extra['surrogate_success_rate']:.2%}", highlight=False)
    l2 = d["l2_median"]
    out.print(
        f"  perturbation  linf max {d['linf_max']:.4g}, median l2 {'n/a' if l2 is None else f'{l2:.4g}'}",
        highlight=False,
    )
    if d["queries_max"]:
        out.print(
            f"  queries       mean {d['queries_mean']:.1f}, median {d['queries_median']:.0f}, max {d['queries_max']}",
            highlight=False,
        )
    out.print(f"  time          {d['seconds']:.2f} s", highlight=False)
    for w in d["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
