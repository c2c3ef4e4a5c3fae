"""What the commands share: option types, progress rendering, output (the model they take: `_target`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bastion.core.progress import ProgressEvent, ProgressFn

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", "-c", help="a bastion checkpoint (.safetensors)", show_default=False)
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="data set: a name from `bastion list datasets`, optionally NAME:PATH",
        show_default=False,
    ),
]
DataRootOpt = Annotated[
    Path | None, typer.Option(help="folder holding downloaded data sets (default $BASTION_DATA)", show_default=False)
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")]


@contextmanager
def progress_bar(description: str, *, quiet: bool = False) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr fed by bastion's progress events (silent when `quiet`)."""
    if quiet:
        yield lambda event: None
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
        tasks: dict[str, int] = {}

        def on_event(event: ProgressEvent) -> None:
            if event.task not in tasks:
                tasks[event.task] = bar.add_task(f"{description} {event.task}", total=event.total, info="")
            info = "  ".join(f"{k} {_fmt(v)}" for k, v in event.info.items() if v is not None)
            bar.update(tasks[event.task], completed=event.completed, total=event.total, info=info)

        yield on_event


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
