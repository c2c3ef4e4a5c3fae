"""The model a command works on, declared once: `ModelSource` and the `takes_model` decorator.

Every command that takes a model takes it the same way: a bastion checkpoint (--checkpoint), the user's
own model with its adapter options (--model, --weights, --mean, --std, --bounds, --logits-key), or,
where the command can work from answers alone, a deployed model (--onnx or --endpoint, with
--endpoint-batch, --rate-limit, --retries, --timeout); with the data set (--data, --data-root), the
device and, for some, a second data set (--ood-data).

`ModelSource` is a frozen dataclass whose fields are those options: each field is annotated with its
typer option, so the dataclass is their one declaration. `takes_model` puts the fields a command asks
for into its signature (typer reads `inspect.signature`) in place of its `source: ModelSource`
parameter, and hands the command one `ModelSource`: the model's options stand where `source` stands,
--ood-data, --data-root and --device before --json and --quiet (or last). The source loads the model
with its data (`load`, for eval, attack and certify) or builds the `AuditTarget` of the audit and its
scenario commands (`target`). It is also what a Ray worker rebuilds the target from: it pickles small,
and `resolved` names its files by absolute paths for a worker whose working directory differs.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer
from torch import nn

from bastion._atomic import sha256_file
from bastion.audit import AuditTarget
from bastion.cli._common import CheckpointOpt, DataOpt, DataRootOpt, DeviceOpt
from bastion.core.errors import ConfigError, DataError
from bastion.core.ops import resolve_device
from bastion.core.victim import Victim
from bastion.data import Dataset, load_dataset
from bastion.deploy import DeployedModel, EndpointModel, OnnxModel
from bastion.models.checkpoint import CheckpointMeta, load_checkpoint
from bastion.models.external import ExternalModel, load_external
from bastion.train import train_like

__all__ = ["Loaded", "ModelSource", "takes_model"]

_ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="your own model as package.module:factory (with --weights)", show_default=False),
]
_WeightsOpt = Annotated[
    Path | None, typer.Option(help="weights for --model: .safetensors, or a .pt/.pth state dict", show_default=False)
]
_MeanOpt = Annotated[
    str | None, typer.Option(help="per-channel mean the --model expects, e.g. 0.4914,0.4822,0.4465", show_default=False)
]
_StdOpt = Annotated[str | None, typer.Option(help="per-channel std the --model expects", show_default=False)]
_BoundsOpt = Annotated[
    str, typer.Option(help="input range the --model was trained on, e.g. 0,255 or -1,1 (inputs stay in [0, 1])")
]
_LogitsKeyOpt = Annotated[
    str | None,
    typer.Option(help="where the logits are when --model returns a dict, tuple or object", show_default=False),
]
_OnnxOpt = Annotated[
    Path | None,
    typer.Option(
        "--onnx", help="an ONNX file (`bastion export onnx`) queried as deployed: black-box only", show_default=False
    ),
]
_EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="an HTTP endpoint speaking bastion's JSON protocol (docs/deployed.md): black-box only",
        show_default=False,
    ),
]
_BatchOpt = Annotated[int, typer.Option("--endpoint-batch", help="the most images in one request to --endpoint")]
_RateLimitOpt = Annotated[
    float | None,
    typer.Option("--rate-limit", help="the most requests per second to --endpoint", show_default=False),
]
_RetriesOpt = Annotated[int, typer.Option("--retries", help="retries of a failed request to --endpoint (back-off)")]
_TimeoutOpt = Annotated[float, typer.Option("--timeout", help="seconds a request to --endpoint may take")]
_OodDataOpt = Annotated[
    str | None,
    typer.Option(
        "--ood-data",
        help="a second data set of the same image shape, used as one more OOD set (e.g. cifar100:/data)",
        show_default=False,
    ),
]

_EXTERNAL = ("model", "weights", "mean", "std", "bounds", "logits_key")
_DEPLOYED = ("onnx", "endpoint", "endpoint_batch", "rate_limit", "retries", "timeout")
_LAST = ("ood_data", "data_root", "device")  # stand before --json and --quiet, which end every command
_CLI_DEFAULTS = {"device": "auto"}  # the library's default is the CPU; the command line takes the best device


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """A model as the command line gives it (fields in --help order), with the data it is evaluated on."""

    checkpoint: CheckpointOpt = None
    data: DataOpt = None
    model: _ModelOpt = None
    weights: _WeightsOpt = None
    mean: _MeanOpt = None
    std: _StdOpt = None
    bounds: _BoundsOpt = "0,1"
    logits_key: _LogitsKeyOpt = None
    onnx: _OnnxOpt = None
    endpoint: _EndpointOpt = None
    endpoint_batch: _BatchOpt = 64
    rate_limit: _RateLimitOpt = None
    retries: _RetriesOpt = 3
    timeout: _TimeoutOpt = 30.0
    ood_data: _OodDataOpt = None
    data_root: DataRootOpt = None
    device: DeviceOpt = "cpu"

    def __post_init__(self) -> None:
        if not self.deployed:
            return
        if self.onnx is not None and self.endpoint is not None:
            raise ConfigError("give --onnx FILE or --endpoint URL, not both")
        own = ("checkpoint", "model", "weights", "mean", "std", "logits_key", "ood_data")
        clash = [f"--{k.replace('_', '-')}" for k in own if getattr(self, k) is not None]
        if clash:
            raise ConfigError(f"{' and '.join(clash)} cannot go with --onnx or --endpoint, which are the model already")

    @property
    def deployed(self) -> bool:
        """The model is an ONNX file or an endpoint, known by its answers alone."""
        return self.onnx is not None or self.endpoint is not None

    def load(self, *, split_seed: int | None = None) -> Loaded:
        """The model and the data set it is evaluated on, checked against each other.

        The data set and split seed default to what the checkpoint (or the ONNX file's metadata, or the
        endpoint's self-description) records; a user's own model needs --data.
        """
        if self.deployed:
            return self._load_deployed(split_seed)
        dev = resolve_device(self.device)
        net, meta = self._network(str(dev))
        data = self.data
        if data is None:
            if meta is None:
                raise ConfigError("--data is needed with --model (which data set should the model be evaluated on?)")
            data = meta.dataset
        seed = split_seed if split_seed is not None else (meta.split_seed if meta is not None else 0)
        ds = load_dataset(data, root=self.data_root, seed=seed)
        if meta is not None and tuple(meta.input_shape) != tuple(ds.input_shape):
            raise DataError(
                f"data set {data!r} has images of shape {tuple(ds.input_shape)} but the model expects "
                f"{tuple(meta.input_shape)} (it was trained on {meta.dataset!r})"
            )
        return Loaded(Victim(net, input_shape=ds.input_shape, device=dev), meta, ds, data, seed)

    def target(self) -> AuditTarget:
        """The model under audit as an `AuditTarget`: its data set, split and training subset, a way to retrain
        it and the second data set of --ood-data. A deployed model is known by the SHA-256 of the ONNX file, or
        of the endpoint's URL and what its GET says about itself; it cannot be retrained, and nobody recorded
        what it trained on."""
        loaded = self.load()
        if isinstance(loaded.victim, DeployedModel):
            served = loaded.victim
            return AuditTarget(
                victim=served,
                dataset=loaded.dataset,
                data=loaded.data,
                split_seed=loaded.split_seed,
                model_name=served.name,
                model_sha256=served.identity,
                model_meta={"deployed": "onnx" if self.onnx is not None else "endpoint", **served.describe()},
                members_assumed=True,
            )
        if self.checkpoint is not None:
            assert loaded.meta is not None
            name, sha, meta = self.checkpoint.name, sha256_file(self.checkpoint), loaded.meta
            model_meta = meta.to_dict()
        else:
            assert self.model is not None
            name = self.model
            weights_sha = sha256_file(self.weights) if self.weights is not None else ""
            key = f"{self.model}\0{weights_sha}\0{self.mean}\0{self.std}\0{self.bounds}"
            sha = hashlib.sha256(key.encode()).hexdigest()
            meta = _external_meta(self.model, loaded.victim.model, loaded.dataset, loaded.data, loaded.split_seed)
            model_meta = {**meta.to_dict(), "weights": str(self.weights)}
        ood = None
        if self.ood_data is not None:
            ood = load_dataset(self.ood_data, root=self.data_root, seed=0)
            if ood.input_shape != loaded.dataset.input_shape:
                raise DataError(
                    f"--ood-data {self.ood_data!r} has images of shape {ood.input_shape}; the model takes "
                    f"{loaded.dataset.input_shape}"
                )
        return AuditTarget(
            victim=loaded.victim,
            dataset=loaded.dataset,
            data=loaded.data,
            split_seed=loaded.split_seed,
            model_name=name,
            model_sha256=sha,
            model_meta=model_meta,
            train_n=meta.train_n,
            members_assumed=self.checkpoint is None,
            trainer=partial(train_like, meta, device=self.device),
            ood_data=ood,
            ood_name=self.ood_data,
        )

    def resolved(self) -> ModelSource:
        """This source with its files named by absolute paths, for a process whose working directory differs
        (a Ray worker; one on another machine needs the same files at the same paths)."""
        paths = {k: getattr(self, k) for k in ("checkpoint", "weights", "onnx", "data_root")}
        return replace(self, **{k: Path(p).expanduser().resolve() for k, p in paths.items() if p is not None})

    def _network(self, device: str) -> tuple[nn.Module, CheckpointMeta | None]:
        """The in-process model: the checkpoint's, or the user's with its adapter options."""
        if (self.checkpoint is None) == (self.model is None):
            raise ConfigError("give either --checkpoint CKPT or --model package.module:factory (with --weights)")
        if self.checkpoint is not None:
            if self.weights is not None:
                raise ConfigError("--weights goes with --model; a --checkpoint already holds its weights")
            return load_checkpoint(self.checkpoint, device=device)
        assert self.model is not None
        b = _floats(self.bounds, "--bounds")
        if b is None or len(b) != 2:
            raise ConfigError(f"--bounds takes two numbers LOW,HIGH; got {self.bounds!r}")
        net = load_external(
            self.model,
            weights=self.weights,
            mean=_floats(self.mean, "--mean"),
            std=_floats(self.std, "--std"),
            bounds=(b[0], b[1]),
            logits_key=self.logits_key,
        )
        return net.to(device).eval(), None

    def _load_deployed(self, split_seed: int | None) -> Loaded:
        """The ONNX file or endpoint with the data set it says it classifies (or --data), checked together.

        The split seed is the one recorded in the ONNX metadata or given by the endpoint (default 0)."""
        model: DeployedModel
        if self.onnx is not None:
            model = OnnxModel(self.onnx)
        else:
            assert self.endpoint is not None
            ds = None if self.data is None else load_dataset(self.data, root=self.data_root, seed=0)
            model = EndpointModel(
                self.endpoint,
                input_shape=None if ds is None else ds.input_shape,
                num_classes=None if ds is None else ds.num_classes,
                batch_size=self.endpoint_batch,
                rate_limit=self.rate_limit,
                retries=self.retries,
                timeout=self.timeout,
            )
        data = self.data or model.info.get("dataset")
        if data is None:
            raise ConfigError(f"--data is needed: {model.name} does not say which data set it classifies")
        seed = split_seed if split_seed is not None else int(model.info.get("split_seed", 0))
        ds = load_dataset(data, root=self.data_root, seed=seed)
        if tuple(ds.input_shape) != model.input_shape or ds.num_classes != model.num_classes:
            raise DataError(
                f"data set {data!r} has images of shape {tuple(ds.input_shape)} in {ds.num_classes} classes, but "
                f"{model.name} takes {model.input_shape} and answers {model.num_classes} classes"
            )
        return Loaded(model, None, ds, data, seed)


@dataclass(frozen=True)
class Loaded:
    """What a command that evaluates a model works on: the model (in process, or deployed), its checkpoint's
    metadata (None for a user's or a deployed model), the data set, its name and split seed."""

    victim: Victim | DeployedModel
    meta: CheckpointMeta | None
    dataset: Dataset
    data: str
    split_seed: int


Command = TypeVar("Command", bound=Callable[..., Any])


def takes_model(
    *, external: bool = True, deployed: bool = False, ood_data: bool = False, without: tuple[str, ...] = ()
) -> Callable[[Command], Command]:
    """Give a command with a `source: ModelSource` parameter the options of `ModelSource` in its place.

    Args:
        external: take the user's own model (--model and its adapter options) besides --checkpoint.
        deployed: take an ONNX file or an endpoint (--onnx, --endpoint and the endpoint's options).
        ood_data: take --ood-data.
        without: options the command declares itself (with other help); they are not in its `source`.
    """
    skip = set(without) | set(() if external else _EXTERNAL) | set(() if deployed else _DEPLOYED)
    skip |= set() if ood_data else {"ood_data"}
    hints = get_type_hints(ModelSource, include_extras=True)
    options = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=_CLI_DEFAULTS.get(f.name, f.default),
            annotation=hints[f.name],
        )
        for f in fields(ModelSource)
        if f.name not in skip
    ]
    names = [p.name for p in options]

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
        at = [p.name for p in own].index("source")
        if set(names) & set(signature.parameters):
            raise TypeError(f"{command.__name__} declares {set(names) & set(signature.parameters)} itself")
        rest = own[:at] + own[at + 1 :]
        end = next((i for i, p in enumerate(rest) if p.name in ("json_out", "quiet")), len(rest))
        last = [p for p in options if p.name in _LAST]
        params = rest[:at] + [p for p in options if p.name not in _LAST] + rest[at:end] + last + rest[end:]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            source = ModelSource(**{name: kwargs.pop(name) for name in names})
            if not external and not source.deployed and source.checkpoint is None and "checkpoint" in names:
                raise ConfigError("give --checkpoint CKPT (a bastion checkpoint)")
            return command(source=source, **kwargs)

        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params} | {"return": signature.return_annotation}
        return run  # type: ignore[return-value]

    return decorate


def _floats(text: str | None, option: str) -> list[float] | None:
    """'0.5,0.25' -> [0.5, 0.25]; a clear `ConfigError` naming `option` otherwise."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}") from None


def _external_meta(factory: str, net: object, ds: Dataset, data: str, split_seed: int) -> CheckpointMeta:
    """What is known of a user's own model: its factory and adapter, the data set it is audited on (its
    training split is assumed to be what it trained on) and bastion's standard recipe for retraining."""
    adapter = net.adapter_settings() if isinstance(net, ExternalModel) else {}
    return CheckpointMeta(
        architecture="external",
        arch_kwargs={},
        factory=factory,
        adapter=adapter,
        dataset=data,
        split_seed=split_seed,
        num_classes=ds.num_classes,
        input_shape=ds.input_shape,
        mean=ds.mean,
        std=ds.std,
        recipe={"name": "standard"},
    )
