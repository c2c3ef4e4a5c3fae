"""`bastion mia`, `bastion ood`, `bastion poison`, `bastion protect`, `bastion bitflip`, `bastion extract`
and `bastion sfl-extract`: one family's scenarios on a model, outside an audit.

They run exactly what an audit's `membership`, `ood`, `backdoor`, `protection`, `bitflip`, `extraction`
and `split-extraction` scenarios run (the same kind, the same samples), print a table and, with --json,
write every scenario's record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bastion._atomic import write_json
from bastion.audit import KINDS, AuditTarget, Scenario
from bastion.audit.kinds import MethodParams
from bastion.audit.kinds.backdoor import BackdoorSettings, unknown_detector
from bastion.audit.kinds.bitflip import BitFlipSettings
from bastion.audit.kinds.extraction import ExtractionSettings, check_settings
from bastion.audit.kinds.ood import SETS, OODSettings
from bastion.audit.kinds.protection import ProtectionSettings, adversarial_recipe
from bastion.audit.kinds.split_extraction import AUX_SOURCES, SplitExtractionSettings
from bastion.cli._common import JsonOpt, QuietOpt, console, out, progress_bar
from bastion.cli._target import ModelSource, takes_model
from bastion.core.errors import ConfigError
from bastion.core.params import param_fields, parse_params
from bastion.core.registry import ATTACKS, DEFENSES
from bastion.report import format_metric

NOpt = Annotated[int, typer.Option("--n", help="members and non-members (mia), or test images (ood), each")]
SeedOpt = Annotated[int, typer.Option(help="seeds the random OOD sets")]
PoisonSeedOpt = Annotated[int, typer.Option(help="seeds the poisoned images, the trigger and the training")]


def _run(family: str, scenarios: list[Scenario], target: AuditTarget, seed: int, quiet: bool) -> list[dict[str, Any]]:
    kind = KINDS.get(family)
    for sc in scenarios:
        kind.check(sc, target)
    rows = []
    with progress_bar(family, quiet=quiet) as progress:
        for sc in scenarios:
            result = kind.run(sc, target, seed=seed, progress=progress)
            rows.append(
                {"key": sc.key, "metrics": result.metrics, "warnings": result.warnings, "record": result.record}
            )
    return rows


Lines = list[tuple[str, dict[str, Any]]]  # a label and its metrics per line


def _report(
    blocks: list[tuple[list[str], Lines]],
    header: str,
    rows: list[dict[str, Any]],
    target: AuditTarget,
    json_out: Path | None,
) -> None:
    """Print each block's table (its columns over label lines) under `header`; write the records as JSON."""
    out.print(header, highlight=False)
    for columns, table in blocks:
        width = max(len(label) for label, _ in table)
        out.print("  " + " " * width + "".join(f"{c:>19}" for c in columns), highlight=False)
        for label, metrics in table:
            values = "".join(f"{format_metric(c, metrics.get(c)):>19}" for c in columns)
            out.print(f"  {label:<{width}}{values}", highlight=False)
    for w in dict.fromkeys(w for r in rows for w in r["warnings"]):
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    if json_out is not None:
        write_json(json_out, {"model": target.model_name, "data": target.data, "scenarios": rows})


@takes_model()
def mia(
    attacks: Annotated[
        list[str] | None,
        typer.Argument(
            help="membership attacks (`bastion list attacks`; default: all that need no shadow models)",
            show_default=False,
        ),
    ] = None,
    *,
    source: ModelSource,
    n: NOpt = 1000,
    thresholds: Annotated[
        str,
        typer.Option(
            help="global: one threshold for all candidates; class: one per class, fitted on half the candidates "
            "(known to the attacker), the other half measured"
        ),
    ] = "global",
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="an attack parameter as key=value, for the named attacks that take it (repeatable), e.g. "
            "-p shadows=8 -p online=false for lira",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Membership inference: can the model's scores tell its training images from unseen ones?

    Scores the first N training images the model saw (members) and the first N test images
    (non-members) with each attack; prints AUROC, TPR at 0.1% and 1% FPR and balanced accuracy.
    LiRA (`bastion mia lira`) first trains shadow models like this one on halves of those 2N images.
    """
    names = attacks or [a for a in ATTACKS.names("membership") if not ATTACKS.get(a).needs_reference]
    pairs, per_attack = param or [], {}
    for name in names:
        cls = ATTACKS.get(name, family="membership")
        own = {f.name for f, _, _ in param_fields(cls)}
        per_attack[name] = {"thresholds": thresholds} | parse_params(
            cls, [p for p in pairs if p.partition("=")[0].strip().replace("-", "_") in own]
        )
        cls(**per_attack[name])  # checks --thresholds and the parameters
    for pair in pairs:
        key, sep, _ = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"parameters are given as key=value; got {pair!r}")
        if not any(key in {f.name for f, _, _ in param_fields(ATTACKS.get(a))} for a in names):
            raise ConfigError(f"--param {pair!r}: none of {', '.join(names)} takes a parameter {key!r}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    target = source.target()
    scenarios = [Scenario(name, "membership", name, n, MethodParams(params=per_attack[name])) for name in names]
    rows = _run("membership", scenarios, target, 0, quiet)
    record = rows[0]["record"]
    header = (
        f"[bold]membership inference[/bold] on {target.model_name}: {record['n_positive']} members, "
        f"{record['n_negative']} non-members measured"
    )
    if thresholds == "class":
        header += f" ({record['extra']['known']} more known to the attacker, thresholds per class)"
    table = [(r["key"], r["metrics"]) for r in rows]
    columns = ["auroc", "tpr_at_fpr_1e-3", "tpr_at_fpr_1e-2", "balanced_accuracy"]
    _report([(columns, table)], header, rows, target, json_out)


@takes_model(ood_data=True)
def ood(
    detectors: Annotated[
        list[str] | None,
        typer.Argument(help="OOD detectors (`bastion list defenses`; default: all)", show_default=False),
    ] = None,
    *,
    source: ModelSource,
    sets: Annotated[
        str | None,
        typer.Option(help=f"comma-separated OOD sets among {', '.join(SETS)} (default: all that apply)"),
    ] = None,
    n: NOpt = 1000,
    seed: SeedOpt = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Out-of-distribution detection: can the model's outputs flag inputs unlike its test images?

    Scores the first N test images (in-distribution) and N images of each OOD set with each detector;
    prints AUROC and FPR at 95% TPR per set.
    """
    names = detectors or DEFENSES.names("ood")
    for name in names:
        DEFENSES.get(name, family="ood")
    chosen = tuple(s.strip() for s in sets.split(",") if s.strip()) if sets else None
    for s in chosen or ():
        if s not in SETS:
            raise ConfigError(f"unknown OOD set {s!r} in --sets; the sets are {', '.join(SETS)}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    target = source.target()
    scenarios = [Scenario(name, "ood", name, n, OODSettings(sets=chosen, params={})) for name in names]
    rows = _run("ood", scenarios, target, seed, quiet)
    table = [
        (f"{r['key']} {name}", s) for r in rows for name, s in [*r["record"]["sets"].items(), ("(mean)", r["metrics"])]
    ]
    header = f"[bold]OOD detection[/bold] on {target.model_name}: {rows[0]['record']['n_id']} test images per set"
    _report([(["auroc", "fpr95"], table)], header, rows, target, json_out)


@takes_model()
def poison(
    name: Annotated[str, typer.Argument(help="poisoning attack (`bastion list attacks`, family backdoor)")],
    params: Annotated[
        list[str] | None,
        typer.Argument(help="the attack's parameters as key=value, e.g. rate=0.05 target=0", show_default=False),
    ] = None,
    *,
    source: ModelSource,
    detect: Annotated[
        list[str] | None,
        typer.Option("--detect", help="a backdoor detector run on the poisoned model (repeatable)", show_default=False),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="test images measured (the last 200 are held out)")] = 1000,
    seed: PoisonSeedOpt = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Backdoor: poison the model's training set, train a model like it on it, measure the backdoor.

    Prints the poisoned model's clean accuracy and the trigger's attack success rate (ASR) on test
    images of the other classes, and what the trigger does to the model as it is; with --detect, what
    each backdoor detector (`bastion list defenses`) finds: run-time detectors screen triggered and
    clean test inputs, training-set inspectors the poisoned training set (and a model is retrained
    without what they remove).
    """
    cls = ATTACKS.get(name, family="backdoor")
    detectors = tuple(detect or ())
    for d in detectors:
        if problem := unknown_detector(d):
            raise ConfigError(problem)
    kwargs = parse_params(cls, params or [])
    cls(**kwargs)  # checks the parameters before anything trains
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    target = source.target()
    settings = BackdoorSettings(params=kwargs, detectors=detectors)
    rows = _run("backdoor", [Scenario(name, "backdoor", name, n, settings)], target, seed, quiet)
    record = rows[0]["record"]
    poisoned = (
        f"{record['n_poisoned']} of {record['n_train']} training images poisoned"
        if record["n_poisoned"]
        else f"every batch of the {record['n_train']} training images poisoned as it trains"  # training control
    )
    header = f"[bold]backdoor[/bold] on {target.model_name}: {poisoned}, {record['n_test']} test images"
    columns = ["clean_accuracy", "clean_drop", "asr", "asr_over_correct", "clean_model_asr"]
    blocks = [(columns, [(name, rows[0]["metrics"])])]
    for d, found in record["detectors"].items():
        blocks.append((list(found["metrics"]), [(d, found["metrics"])]))
    _report(blocks, header, rows, target, json_out)


@takes_model()
def protect(
    name: Annotated[str, typer.Argument(help="data protection (`bastion list attacks`, family protection)")],
    params: Annotated[
        list[str] | None,
        typer.Argument(help="the protection's parameters as key=value, e.g. eps=0.1", show_default=False),
    ] = None,
    *,
    source: ModelSource,
    adversarial: Annotated[
        str, typer.Option(help="also train adversarially with this recipe (`bastion list recipes`), or none")
    ] = "fgsm-rs",
    n: Annotated[int, typer.Option("--n", help="test images measured")] = 1000,
    seed: Annotated[int, typer.Option(help="seeds the protection and the training")] = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Data protection: perturb the model's training set so that it cannot be learned, and check.

    Protects the training set the model learned from (labels kept), trains a model like it from scratch
    on the protected images, and, unless --adversarial none, another with adversarial training; prints
    their test accuracy beside the same training on the clean set (lower on the protected set is
    better) and the perturbation's size (L-inf, pixels changed).
    """
    cls = ATTACKS.get(name, family="protection")
    if problem := adversarial_recipe(adversarial):
        raise ConfigError(problem)
    kwargs = parse_params(cls, params or [])
    cls(**kwargs)  # checks the parameters before anything trains
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    target = source.target()
    settings = ProtectionSettings(params=kwargs, adversarial=adversarial)
    rows = _run("protection", [Scenario(name, "protection", name, n, settings)], target, seed, quiet)
    record = rows[0]["record"]
    header = (
        f"[bold]data protection[/bold] on {target.model_name}: {record['n_protected']} of {record['n_train']} "
        f"training images protected, {record['n_test']} test images"
    )
    columns = ["clean_accuracy", "accuracy", "drop", "linf", "l0_pixels"]
    if record["adversarial_recipe"] is not None:
        columns[3:3] = ["adv_clean_accuracy", "adv_accuracy", "adv_drop"]
    _report([(columns, [(name, rows[0]["metrics"])])], header, rows, target, json_out)


@takes_model()
def bitflip(
    name: Annotated[str, typer.Argument(help="bit-flip attack (`bastion list attacks`, family bitflip)")],
    params: Annotated[
        list[str] | None,
        typer.Argument(help="the attack's parameters as key=value, e.g. max_flips=30", show_default=False),
    ] = None,
    *,
    source: ModelSource,
    n: Annotated[int, typer.Option("--n", help="test images the accuracy is measured on after every flip")] = 500,
    baseline: Annotated[bool, typer.Option(help="also flip as many random bits, for comparison")] = True,
    seed: Annotated[int, typer.Option(help="seeds the attack batch and the random flips")] = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Bit flips: how many flipped weight bits does it take to break the model, quantized to 8 bits?

    Quantizes a copy of the model per layer to 8 bits (the model and its file are not changed), lets
    the attack flip bits one at a time (`bfa` aims them with the gradient, on a batch of training
    images), and measures the accuracy on the first N test images after each flip; with --baseline,
    the same number of random flips beside it. Prints the float, 8-bit and final accuracy and the
    flips (the Hamming distance to the original weights).
    """
    cls = ATTACKS.get(name, family="bitflip")
    kwargs = parse_params(cls, params or [])
    cls(**kwargs)  # checks the parameters before the model loads
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    target = source.target()
    settings = BitFlipSettings(params=kwargs, baseline=baseline and name != "random-flip")
    rows = _run("bitflip", [Scenario(name, "bitflip", name, n, settings)], target, seed, quiet)
    record = rows[0]["record"]
    header = (
        f"[bold]bit flips[/bold] on {target.model_name}: {record['n_eval']} test images, "
        f"{record['bits_total']:,} weight bits in {len(record['layers'])} layers, stopped at {record['stop']}"
    )
    columns = ["float_accuracy", "quantized_accuracy", "accuracy", "flips", "random_accuracy"]
    columns += [c for c in ("asr", "other_accuracy") if c in rows[0]["metrics"]]  # a targeted attack
    _report([(columns, [(name, rows[0]["metrics"])])], header, rows, target, json_out)


@takes_model()
def sfl_extract(
    params: Annotated[
        list[str] | None,
        typer.Argument(help="the attack's parameters as key=value, e.g. epochs=20", show_default=False),
    ] = None,
    attack: Annotated[
        str, typer.Option(help="craft-me, gan-me, gm-me, train-me or softtrain-me (family split-extraction)")
    ] = "gm-me",
    budget: Annotated[int | None, typer.Option(help="gradient queries at most (default: the attack's)")] = None,
    server_layers: Annotated[
        int, typer.Option(help="layers (conv, max-pool, linear) on the server, counted from the output")
    ] = 3,
    own: Annotated[float, typer.Option(help="the attacker's labelled share of the training split")] = 0.1,
    aux: Annotated[str, typer.Option(help="gm-me's unlabelled images: digits, uniform, gaussian or train")] = "digits",
    aux_n: Annotated[int, typer.Option(help="how many auxiliary images")] = 2000,
    *,
    source: ModelSource,
    n: Annotated[int, typer.Option("--n", help="test images the stolen copy is measured on")] = 1000,
    seed: Annotated[int, typer.Option(help="seeds the attack and the surrogate's initialisation")] = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Model extraction in split learning: can a client rebuild the server's part from its gradients?

    Cuts the model so that its last --server-layers layers run on a server that answers only with
    dCE/dz per row (split federated learning, Li et al. arXiv 2303.08581); the attacker holds the
    client-side part, a budget of gradient queries and, for train-me and softtrain-me, its own share
    of the training data. Prints the stolen copy's accuracy and fidelity to the model on the first N
    test images, the model's accuracy, an untrained copy's, and the queries the server answered.
    """
    cls = ATTACKS.get(attack, family="split-extraction")
    kwargs = parse_params(cls, params or [])
    if budget is not None:
        kwargs["budget"] = budget
    cls(**kwargs)  # checks the parameters before the model loads
    if n < 1 or aux_n < 1 or server_layers < 1:
        raise ConfigError(f"--n, --aux-n and --server-layers must be at least 1; got {n}, {aux_n}, {server_layers}")
    if not 0 < own <= 1:
        raise ConfigError(f"--own must be a share of the training split in (0, 1]; got {own}")
    if aux not in AUX_SOURCES:
        raise ConfigError(f"--aux must be one of {', '.join(AUX_SOURCES)}; got {aux!r}")
    target = source.target()
    settings = SplitExtractionSettings(params=kwargs, server_layers=server_layers, own=own, aux=aux, aux_n=aux_n)
    rows = _run("split-extraction", [Scenario(attack, "split-extraction", attack, n, settings)], target, seed, quiet)
    record = rows[0]["record"]
    header = (
        f"[bold]split-learning extraction[/bold] on {target.model_name}: server holds {record['server_layers']} of "
        f"{record['total_layers']} layers, {record['queries']:,} gradient queries answered, {record['n_test']} test "
        f"images"
    )
    columns = ["accuracy", "fidelity", "victim_accuracy", "random_accuracy", "queries"]
    _report([(columns, [(attack, rows[0]["metrics"])])], header, rows, target, json_out)


@takes_model(ood_data=True)
def extract(
    params: Annotated[
        list[str] | None,
        typer.Argument(help="the attack's parameters as key=value, e.g. policy=adaptive", show_default=False),
    ] = None,
    attack: Annotated[str, typer.Option(help="extraction attack (`bastion list attacks`, family extraction)")] = (
        "knockoff"
    ),
    budget: Annotated[
        int | None, typer.Option(help="total queries the API answers (default: the attack's)", show_default=False)
    ] = None,
    output: Annotated[str, typer.Option(help="what the API answers: probs, label or top-k (with --k)")] = "probs",
    k: Annotated[int | None, typer.Option("--k", help="classes shown by a top-k API", show_default=False)] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="the attacker's images: digits (another distribution), ood (the --ood-data training split) or "
            "heldout (test images after the first N); default: heldout for jbda, else digits (ood for colour "
            "images when --ood-data is given)",
            show_default=False,
        ),
    ] = None,
    defense: Annotated[
        list[str] | None,
        typer.Option(
            "--defense",
            help="an output post-processor the API applies, NAME or NAME:key=value,... (`bastion list defenses`); "
            "repeat to chain them in order",
            show_default=False,
        ),
    ] = None,
    *,
    source: ModelSource,
    n: Annotated[int, typer.Option("--n", help="test images the copy is measured on (never queried)")] = 500,
    seed: Annotated[int, typer.Option(help="seeds the pool, the queries and the copy's training")] = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Model extraction: how well can a copy of the model be trained through its query API?

    Queries the model as a black box within a total budget (Knockoff Nets on another distribution's
    images, or JBDA growing a seed set along the copy's Jacobian), trains a fresh model of the same
    architecture on the answers, and prints the copy's accuracy, its fidelity (agreement with the
    model's labels on the first N test images, never queried), the queries spent, and how often
    PGD examples crafted on the copy fool the model.
    """
    cls = ATTACKS.get(attack, family="extraction")
    kwargs = parse_params(cls, params or [])
    if budget is not None:
        if "budget" in kwargs:
            raise ConfigError("give the budget once: --budget or budget=, not both")
        kwargs["budget"] = budget
    cls(**kwargs)  # checks the parameters before the model loads
    defenses = tuple(defense or ())
    check_settings(output, k, pool, defenses)
    if n < 1:
        raise ConfigError(f"--n must be at least 1; got {n}")
    target = source.target()
    kind = KINDS.get("extraction")
    settings = ExtractionSettings(params=kwargs, output=output, k=k, pool=pool, defenses=defenses)
    key = kind.default_name(attack, settings)
    rows = _run("extraction", [Scenario(key, "extraction", attack, n, settings)], target, seed, quiet)
    record = rows[0]["record"]
    header = (
        f"[bold]model extraction[/bold] on {target.model_name}: {record['queries']:,} of {record['budget']:,} "
        f"queries answering {record['output']}, pool {record['transfer_set']['pool']}, {record['n_test']} test images"
    )
    columns = ["victim_accuracy", "accuracy", "fidelity", "queries", "transfer_success_rate", "noise_success_rate"]
    _report([(columns, [(key, rows[0]["metrics"])])], header, rows, target, json_out)
