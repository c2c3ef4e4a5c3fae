"""The audit target a command works on: the model, its data, what it trained on, how to retrain it."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from bastion._atomic import sha256_file
from bastion.audit import AuditTarget
from bastion.cli._common import load_victim_and_data
from bastion.cli._deployed import load_deployed
from bastion.core.errors import DataError
from bastion.data import Dataset, load_dataset
from bastion.models.checkpoint import CheckpointMeta
from bastion.models.external import ExternalModel
from bastion.train import train_like


def audit_target(
    *,
    checkpoint: Path | None,
    model: str | None = None,
    weights: Path | None = None,
    mean: str | None = None,
    std: str | None = None,
    bounds: str = "0,1",
    logits_key: str | None = None,
    data: str | None = None,
    data_root: Path | None = None,
    ood_data: str | None = None,
    device: str = "cpu",
) -> AuditTarget:
    """The model under audit (a checkpoint, or the user's model with its adapter options) as an
    `AuditTarget`: the checkpoint's data set, split and training subset, a way to retrain it, and the
    second data set given with --ood-data."""
    loaded = load_victim_and_data(
        checkpoint=checkpoint,
        model=model,
        weights=weights,
        mean=mean,
        std=std,
        bounds=bounds,
        logits_key=logits_key,
        data=data,
        data_root=data_root,
        device=device,
    )
    if checkpoint is not None:
        assert loaded.meta is not None
        name, sha, meta = checkpoint.name, sha256_file(checkpoint), loaded.meta
    else:
        assert model is not None
        name = model
        weights_sha = sha256_file(weights) if weights is not None else ""
        sha = hashlib.sha256(f"{model}\0{weights_sha}\0{mean}\0{std}\0{bounds}".encode()).hexdigest()
        meta = _external_meta(model, loaded.victim.model, loaded.dataset, loaded.data, loaded.split_seed)
    ood = None
    if ood_data is not None:
        ood = load_dataset(ood_data, root=data_root, seed=0)
        if ood.input_shape != loaded.dataset.input_shape:
            raise DataError(
                f"--ood-data {ood_data!r} has images of shape {ood.input_shape}; the model takes "
                f"{loaded.dataset.input_shape}"
            )
    return AuditTarget(
        victim=loaded.victim,
        dataset=loaded.dataset,
        data=loaded.data,
        split_seed=loaded.split_seed,
        model_name=name,
        model_sha256=sha,
        model_meta=meta.to_dict() if checkpoint is not None else {**meta.to_dict(), "weights": str(weights)},
        train_n=meta.train_n,
        members_assumed=checkpoint is None,
        trainer=partial(train_like, meta, device=device),
        ood_data=ood,
        ood_name=ood_data,
    )


def deployed_target(
    *,
    onnx: Path | None,
    endpoint: str | None,
    data: str | None,
    data_root: Path | None,
    batch: int = 64,
    rate_limit: float | None = None,
    retries: int = 3,
    timeout: float = 30.0,
) -> AuditTarget:
    """A deployed model (an ONNX file or an HTTP endpoint) as an `AuditTarget` for black-box scenarios.

    Its identity in the store is the SHA-256 of the ONNX file, or of the endpoint's URL and what its GET
    says about itself; it cannot be retrained, and nobody recorded what it trained on."""
    served = load_deployed(
        onnx=onnx,
        endpoint=endpoint,
        data=data,
        data_root=data_root,
        batch=batch,
        rate_limit=rate_limit,
        retries=retries,
        timeout=timeout,
    )
    return AuditTarget(
        victim=served.model,
        dataset=served.dataset,
        data=served.data,
        split_seed=served.split_seed,
        model_name=served.model.name,
        model_sha256=served.model.identity,
        model_meta={"deployed": "onnx" if onnx is not None else "endpoint", **served.model.describe()},
        members_assumed=True,
    )


@dataclass(frozen=True)
class TargetArgs:
    """What `audit_target` builds a target from, kept so that another process or machine (a Ray worker)
    builds the same one: calling it returns the target. Paths are made absolute; a worker elsewhere needs
    the same files at the same paths."""

    checkpoint: Path | None = None
    model: str | None = None
    weights: Path | None = None
    mean: str | None = None
    std: str | None = None
    bounds: str = "0,1"
    logits_key: str | None = None
    data: str | None = None
    data_root: Path | None = None
    ood_data: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        _make_absolute(self, "checkpoint", "weights", "data_root")

    def __call__(self) -> AuditTarget:
        return audit_target(**asdict(self))


@dataclass(frozen=True)
class DeployedArgs:
    """What `deployed_target` builds a target from, kept so that a Ray worker builds the same one: calling
    it returns the target. The ONNX path is made absolute; a worker elsewhere needs the same file at the
    same path, or must reach the same endpoint."""

    onnx: Path | None = None
    endpoint: str | None = None
    data: str | None = None
    data_root: Path | None = None
    batch: int = 64
    rate_limit: float | None = None
    retries: int = 3
    timeout: float = 30.0

    def __post_init__(self) -> None:
        _make_absolute(self, "onnx", "data_root")

    def __call__(self) -> AuditTarget:
        return deployed_target(**asdict(self))


def _make_absolute(args: object, *names: str) -> None:
    """Make the path fields `names` of the frozen dataclass `args` absolute (where given)."""
    for name in names:
        path = getattr(args, name)
        if path is not None:
            object.__setattr__(args, name, Path(path).expanduser().resolve())


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
