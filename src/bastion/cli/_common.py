"""What the commands share: option types, value parsing, model loading, progress rendering, output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from bastion.core.errors import ConfigError, DataError
from bastion.core.ops import resolve_device
from bastion.core.progress import ProgressEvent, ProgressFn
from bastion.core.victim import Victim
from bastion.data import Dataset, load_dataset
from bastion.models.checkpoint import CheckpointMeta, load_checkpoint
from bastion.models.external import load_external

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

# --- options shared by the commands that take a model ---------------------------------------------
CheckpointOpt = Annotated[
    Path | None, typer.Option("--checkpoint", "-c", help="a bastion checkpoint (.safetensors)", show_default=False)
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="your own model as package.module:factory (with --weights)", show_default=False),
]
WeightsOpt = Annotated[
    Path | None, typer.Option(help="weights for --model: .safetensors, or a .pt/.pth state dict", show_default=False)
]
MeanOpt = Annotated[
    str | None, typer.Option(help="per-channel mean the --model expects, e.g. 0.4914,0.4822,0.4465", show_default=False)
]
StdOpt = Annotated[str | None, typer.Option(help="per-channel std the --model expects", show_default=False)]
BoundsOpt = Annotated[
    str, typer.Option(help="input range the --model was trained on, e.g. 0,255 or -1,1 (inputs stay in [0, 1])")
]
LogitsKeyOpt = Annotated[
    str | None,
    typer.Option(help="where the logits are when --model returns a dict, tuple or object", show_default=False),
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
OodDataOpt = Annotated[
    str | None,
    typer.Option(
        "--ood-data",
        help="a second data set of the same image shape, used as one more OOD set (e.g. cifar100:/data)",
        show_default=False,
    ),
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write the result as JSON here")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")]


def parse_floats(text: str | None, option: str) -> list[float] | None:
    """'0.5,0.25' -> [0.5, 0.25]; a clear `ConfigError` naming `option` otherwise."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}") from None


def load_target(
    *,
    checkpoint: Path | None,
    model: str | None,
    weights: Path | None,
    mean: str | None,
    std: str | None,
    bounds: str,
    logits_key: str | None,
    device: str = "cpu",
) -> tuple[nn.Module, CheckpointMeta | None]:
    """The model a command works on: a bastion checkpoint, or a user's model with its adapter options."""
    if (checkpoint is None) == (model is None):
        raise ConfigError("give either --checkpoint CKPT or --model package.module:factory (with --weights)")
    if checkpoint is not None:
        if weights is not None:
            raise ConfigError("--weights goes with --model; a --checkpoint already holds its weights")
        return load_checkpoint(checkpoint, device=device)
    assert model is not None
    b = parse_floats(bounds, "--bounds")
    if b is None or len(b) != 2:
        raise ConfigError(f"--bounds takes two numbers LOW,HIGH; got {bounds!r}")
    net = load_external(
        model,
        weights=weights,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        bounds=(b[0], b[1]),
        logits_key=logits_key,
    )
    return net.to(device).eval(), None


@dataclass(frozen=True)
class Loaded:
    """What a command that evaluates a model works on."""

    victim: Victim
    meta: CheckpointMeta | None
    dataset: Dataset
    data: str
    split_seed: int


def load_victim_and_data(
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
    device: str,
    split_seed: int | None = None,
) -> Loaded:
    """The model (as a `Victim`) and the data set a command evaluates it on, checked against each other.

    The data set and split seed default to the checkpoint's; a user's own model needs `--data`.
    """
    dev = resolve_device(device)
    net, meta = load_target(
        checkpoint=checkpoint,
        model=model,
        weights=weights,
        mean=mean,
        std=std,
        bounds=bounds,
        logits_key=logits_key,
        device=str(dev),
    )
    if data is None:
        if meta is None:
            raise ConfigError("--data is needed with --model (which data set should the model be evaluated on?)")
        data = meta.dataset
    seed = split_seed if split_seed is not None else (meta.split_seed if meta is not None else 0)
    ds = load_dataset(data, root=data_root, seed=seed)
    check_shape(meta, ds.input_shape, data)
    return Loaded(Victim(net, input_shape=ds.input_shape, device=dev), meta, ds, data, seed)


def check_shape(meta: CheckpointMeta | None, input_shape: tuple[int, int, int], data: str) -> None:
    """A model trained on one image shape cannot run on data of another: say so before anything runs."""
    if meta is not None and tuple(meta.input_shape) != tuple(input_shape):
        raise DataError(
            f"data set {data!r} has images of shape {tuple(input_shape)} but the model expects "
            f"{tuple(meta.input_shape)} (it was trained on {meta.dataset!r})"
        )


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
