"""`bastion audit`: apply a plan to a model, store every result, write the report.

With no arguments it trains (or reuses) `small_cnn` on `mnist5k` and runs the `quick` plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bastion.audit import AuditTarget, ScenarioEvent, load_plan, presenters, run_audit
from bastion.cli._common import (
    BoundsOpt,
    CheckpointOpt,
    DataRootOpt,
    DeviceOpt,
    LogitsKeyOpt,
    MeanOpt,
    ModelOpt,
    OodDataOpt,
    QuietOpt,
    StdOpt,
    WeightsOpt,
    console,
    out,
    progress_bar,
)
from bastion.cli._deployed import (
    BatchOpt,
    EndpointOpt,
    OnnxOpt,
    RateLimitOpt,
    RetriesOpt,
    TimeoutOpt,
    refuse_model_options,
)
from bastion.cli._target import audit_target, deployed_target
from bastion.cli.runs import DbOpt, open_store
from bastion.core.ops import resolve_device
from bastion.core.progress import ProgressEvent, ProgressFn
from bastion.report import write_report
from bastion.train import train_checkpoint


def default_checkpoint(data: str) -> Path:
    """Where the audit keeps the default model (`small_cnn`, standard recipe) for a data set."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in data.split(":")[0])
    return Path("checkpoints") / f"small_cnn-{slug}-standard.safetensors"


def audit(
    checkpoint: CheckpointOpt = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="data set (default: the checkpoint's, or mnist5k)", show_default=False),
    ] = None,
    plan: Annotated[
        str | None,
        typer.Option(
            help="quick, standard, full, blackbox (`bastion list plans`) or a YAML file "
            "[default: quick; blackbox with --onnx/--endpoint]",
            show_default=False,
        ),
    ] = None,
    db: DbOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="report folder (default runs/run-ID)", show_default=False)
    ] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    bounds: BoundsOpt = "0,1",
    logits_key: LogitsKeyOpt = None,
    data_root: DataRootOpt = None,
    ood_data: OodDataOpt = None,
    onnx: OnnxOpt = None,
    endpoint: EndpointOpt = None,
    endpoint_batch: BatchOpt = 64,
    rate_limit: RateLimitOpt = None,
    retries: RetriesOpt = 3,
    timeout: TimeoutOpt = 30.0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Audit a model: run a plan's scenarios, store each result, write an HTML report.

    A killed audit started again with the same arguments resumes where it stopped. With --onnx or
    --endpoint the model is known by its answers alone: only black-box scenarios run (`--plan blackbox`).
    """
    deployed = onnx is not None or endpoint is not None
    if deployed:
        refuse_model_options(checkpoint=checkpoint, model=model, weights=weights, ood_data=ood_data)
    the_plan = load_plan(plan or ("blackbox" if deployed else "quick"))
    resolve_device(device)  # an absent device fails before the database is opened or a model trained
    with open_store(db) as store:  # a bad plan or database fails before any model is loaded or trained
        target = (
            deployed_target(
                onnx=onnx,
                endpoint=endpoint,
                data=data,
                data_root=data_root,
                batch=endpoint_batch,
                rate_limit=rate_limit,
                retries=retries,
                timeout=timeout,
            )
            if deployed
            else _target(
                checkpoint=checkpoint,
                model=model,
                weights=weights,
                mean=mean,
                std=std,
                bounds=bounds,
                logits_key=logits_key,
                data=data,
                data_root=data_root,
                ood_data=ood_data,
                device=device,
                quiet=quiet,
            )
        )
        with _display(quiet) as (on_scenario, progress):
            models = (out_dir if out_dir is not None else Path("runs")) / "models"  # trained models, kept per run
            outcome = run_audit(target, the_plan, store, on_scenario=on_scenario, progress=progress, model_dir=models)
        folder = out_dir if out_dir is not None else Path("runs") / f"run-{outcome.run_id}"
        html, summary = write_report(store, outcome.run_id, folder, presenters())
        url = store.url
    if outcome.resumed:
        console.print(
            f"resumed run {outcome.run_id}: {len(outcome.skipped)} scenario(s) already stored, "
            f"{len(outcome.ran)} run now"
        )
    out.print(
        f"[bold]audit of {target.model_name}[/bold] — plan {the_plan.name}, {len(the_plan.scenarios)} scenarios, "
        f"{outcome.seconds:.0f} s, run {outcome.run_id} in {url}",
        highlight=False,
    )
    for card in summary["scorecard"]:
        out.print(f"  {card['family']:<22} {card['headline_text']:>10}  {card['label']}", highlight=False)
    out.print(f"report: {html}", highlight=False)


def _target(
    *,
    checkpoint: Path | None,
    model: str | None,
    weights: Path | None,
    mean: str | None,
    std: str | None,
    bounds: str,
    logits_key: str | None,
    data: str | None,
    data_root: Path | None,
    ood_data: str | None,
    device: str,
    quiet: bool,
) -> AuditTarget:
    """The model under audit: the checkpoint, the user's model, or the default one (trained on first use,
    on `device`)."""
    if checkpoint is None and model is None:
        checkpoint = default_checkpoint(data or "mnist5k")
        if not checkpoint.exists():
            console.print(f"no checkpoint given: training small_cnn on {data or 'mnist5k'} -> {checkpoint}")
            with progress_bar("small_cnn", quiet=quiet) as progress:
                train_checkpoint(
                    model="small_cnn",
                    data=data or "mnist5k",
                    out=checkpoint,
                    data_root=data_root,
                    device=device,
                    progress=progress,
                )
    return audit_target(
        checkpoint=checkpoint,
        model=model,
        weights=weights,
        mean=mean,
        std=std,
        bounds=bounds,
        logits_key=logits_key,
        data=data,
        data_root=data_root,
        ood_data=ood_data,
        device=device,
    )


@contextmanager
def _display(quiet: bool) -> Iterator[tuple[Callable[[ScenarioEvent], None] | None, ProgressFn | None]]:
    """Two bars on stderr: the scenarios (k of n, time left) and the running attack's own progress."""
    if quiet:
        yield None, None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        overall = bar.add_task("audit", total=None, info="")
        step = bar.add_task("", total=None, info="", visible=False)

        def on_scenario(e: ScenarioEvent) -> None:
            bar.update(overall, total=e.total, completed=e.index - (e.state == "started"), info=e.scenario.key)
            if e.state == "started":
                bar.reset(step, total=None, description=f"  {e.scenario.method}", info="", visible=True)
            elif e.state == "done":
                bar.update(step, visible=False)
                console.print(f"  {e.scenario.key:<24} done in {e.seconds:.1f} s", highlight=False)

        def progress(event: ProgressEvent) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items())
            bar.update(step, completed=event.completed, total=event.total, info=info)

        yield on_scenario, progress
