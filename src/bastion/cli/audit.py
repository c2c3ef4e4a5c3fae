"""`bastion audit`: apply a plan to a model, store every result, write the report.

With no arguments it trains (or reuses) `small_cnn` on `mnist5k` and runs the `quick` plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bastion.audit import (
    AuditJob,
    Executor,
    LocalExecutor,
    RayExecutor,
    ScenarioEvent,
    load_plan,
    presenters,
    run_audits,
)
from bastion.cli._common import QuietOpt, console, out, progress_bar
from bastion.cli._target import ModelSource, takes_model
from bastion.cli.runs import DbOpt, open_store
from bastion.core.errors import ConfigError
from bastion.core.ops import resolve_device
from bastion.core.progress import ProgressEvent, ProgressFn
from bastion.report import write_report
from bastion.train import train_checkpoint


def default_checkpoint(data: str) -> Path:
    """Where the audit keeps the default model (`small_cnn`, standard recipe) for a data set."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in data.split(":")[0])
    return Path("checkpoints") / f"small_cnn-{slug}-standard.safetensors"


class ExecutorName(StrEnum):
    local = "local"
    ray = "ray"


@takes_model(deployed=True, ood_data=True, without=("checkpoint", "data"))
def audit(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            "-c",
            help="a bastion checkpoint (.safetensors); give it several times to audit several models, one run each",
            metavar="CKPT",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="data set (default: the checkpoint's, or mnist5k)", show_default=False),
    ] = None,
    plan: Annotated[
        str | None,
        typer.Option(
            help="quick, standard, full, blackbox (`bastion list plans`) or a YAML file "
            "(default: quick; blackbox with --onnx/--endpoint)",
            show_default=False,
        ),
    ] = None,
    db: DbOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="report folder (default runs/run-ID)", show_default=False)
    ] = None,
    *,
    source: ModelSource,
    executor: Annotated[
        ExecutorName,
        typer.Option(help="where the scenarios run: here, one after another, or as Ray tasks (the `ray` extra)"),
    ] = ExecutorName.local,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="the Ray cluster to join (host:6379, ray://host:10001, auto); default: start a Ray here",
            show_default=False,
        ),
    ] = None,
    ray_cpus: Annotated[
        int | None,
        typer.Option(help="CPUs of the Ray started here: how many scenarios run at once (default: all)", min=1),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Audit a model: run a plan's scenarios, store each result, write an HTML report.

    A killed audit started again with the same arguments resumes where it stopped. With --onnx or
    --endpoint the model is known by its answers alone: only black-box scenarios run (`--plan blackbox`).
    """
    checkpoints = list(dict.fromkeys(checkpoint or []))
    sources = [replace(source, checkpoint=c, data=data) for c in checkpoints or [None]]  # refuses -c with --onnx
    the_plan = load_plan(plan or ("blackbox" if source.deployed else "quick"))
    runner = _executor(executor, ray_address, ray_cpus)
    if len(checkpoints) > 1 and source.model is not None:
        raise ConfigError("--model audits one model of yours; give it alone, without several --checkpoint")
    resolve_device(source.device)  # an absent device fails before the database is opened or a model trained
    with open_store(db) as store:  # a bad plan or database fails before any model is loaded or trained
        if isinstance(runner, RayExecutor):
            runner.check(store.url)  # Ray installed, a database its workers can reach
        # the files by absolute paths: a Ray worker rebuilds the target from its source, elsewhere
        sources = [_with_default_model(s, quiet).resolved() for s in sources]
        jobs = [AuditJob(s.target(), the_plan, s.target) for s in sources]
        with _display(quiet) as (on_scenario, progress):
            models = (out_dir if out_dir is not None else Path("runs")) / "models"  # trained models, kept per run
            outcomes = run_audits(
                jobs, store, on_scenario=on_scenario, progress=progress, model_dir=models.resolve(), executor=runner
            )
        reports = []
        for outcome in outcomes:
            if out_dir is None:
                folder = Path("runs") / f"run-{outcome.run_id}"
            else:  # several models: one report each, in the folder given
                folder = out_dir if len(outcomes) == 1 else out_dir / f"run-{outcome.run_id}"
            reports.append(write_report(store, outcome.run_id, folder, presenters()))
        url = store.url
    for job, outcome, (html, summary) in zip(jobs, outcomes, reports, strict=True):
        if outcome.resumed:
            console.print(
                f"resumed run {outcome.run_id}: {len(outcome.skipped)} scenario(s) already stored, "
                f"{len(outcome.ran)} run now"
            )
        out.print(
            f"[bold]audit of {job.target.model_name}[/bold] — plan {the_plan.name}, {len(the_plan.scenarios)} "
            f"scenarios, {outcome.seconds:.0f} s, run {outcome.run_id} in {url}",
            highlight=False,
        )
        for card in summary["scorecard"]:
            out.print(f"  {card['family']:<22} {card['headline_text']:>10}  {card['label']}", highlight=False)
        out.print(f"report: {html}", highlight=False)


def _executor(name: ExecutorName, address: str | None, cpus: int | None) -> Executor:
    if name is ExecutorName.local:
        if address is not None or cpus is not None:
            given = "--ray-address" if address is not None else "--ray-cpus"
            raise ConfigError(f"{given} goes with --executor ray")
        return LocalExecutor()
    return RayExecutor(address=address, num_cpus=cpus)


def _with_default_model(source: ModelSource, quiet: bool) -> ModelSource:
    """The source, or, when it names no model, the default one (trained on first use, on its device)."""
    if source.checkpoint is not None or source.model is not None or source.deployed:
        return source
    data = source.data or "mnist5k"
    checkpoint = default_checkpoint(data)
    if not checkpoint.exists():
        console.print(f"no checkpoint given: training small_cnn on {data} -> {checkpoint}")
        with progress_bar("small_cnn", quiet=quiet) as progress:
            train_checkpoint(
                model="small_cnn",
                data=data,
                out=checkpoint,
                data_root=source.data_root,
                device=source.device,
                progress=progress,
            )
    return replace(source, checkpoint=checkpoint)


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

        totals: dict[str, int] = {}  # per model: scenarios of several models (Ray) finish in any order
        finished = 0

        def on_scenario(e: ScenarioEvent) -> None:
            nonlocal finished
            totals[e.model] = e.total
            finished += e.state != "started"
            bar.update(overall, total=sum(totals.values()), completed=finished, info=e.scenario.key)
            if e.state == "started":
                bar.reset(step, total=None, description=f"  {e.scenario.method}", info="", visible=True)
            elif e.state == "done":
                bar.update(step, visible=False)
                key = e.scenario.key if len(totals) == 1 else f"{e.model}: {e.scenario.key}"
                console.print(f"  {key:<24} done in {e.seconds:.1f} s", highlight=False)

        def progress(event: ProgressEvent) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items())
            bar.update(step, completed=event.completed, total=event.total, info=info)

        yield on_scenario, progress
