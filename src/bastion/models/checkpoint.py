"""Checkpoints: one safetensors file holding the weights and, in its header, bastion's JSON metadata.

Keeping the metadata inside the weights file (the safetensors format's own `__metadata__` table)
means the two can never be separated or disagree. Files are written to a temporary name and
renamed, so a crash never leaves half a checkpoint. Nothing is ever unpickled: a pickled PyTorch
file is refused with a message saying how to convert it.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

import bastion
from bastion._atomic import atomic_path
from bastion.core.errors import BastionError, CheckpointError
from bastion.models._build import build_model
from bastion.models._weights import check_file, load_state_dict_file
from bastion.models.external import load_external

__all__ = ["CheckpointMeta", "load_checkpoint", "load_state_dict_file", "read_meta", "save_checkpoint"]

FORMAT = "bastion-checkpoint/1"
_META_KEY = "bastion"


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What a checkpoint says about its model: enough to rebuild it and reproduce its numbers.

    Attributes:
        architecture: a registered architecture name, or "external" for a user's factory.
        arch_kwargs: the arguments the architecture was built with.
        dataset: the data-set spec the model was trained on (e.g. "mnist5k").
        split_seed: the seed of that data set's train/test split.
        train_n: the model was trained on the first `train_n` images of the training split (None: all).
        num_classes: K.
        input_shape: (C, H, W) of the inputs.
        mean, std: the normalisation inside the model, per channel.
        bounds: the input range the model takes (bastion models: [0, 1]).
        recipe: the training recipe and its settings (name, epochs, optimiser, seed, ...).
        clean_accuracy: test accuracy measured at the end of training, if known.
        factory: for external models, the `package.module:factory` import string.
        adapter: for external models, the input/output adapter settings (see `external.py`).
        events: notable training events (e.g. catastrophic overfitting caught by a monitor).
        bastion_version, torch_version, python_version, created: provenance.
    """

    architecture: str
    arch_kwargs: dict[str, Any]
    dataset: str
    split_seed: int
    num_classes: int
    train_n: int | None = None
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bounds: tuple[float, float] = (0.0, 1.0)
    recipe: dict[str, Any] = field(default_factory=dict)
    clean_accuracy: float | None = None
    factory: str | None = None
    adapter: dict[str, Any] = field(default_factory=dict)
    events: tuple[dict[str, Any], ...] = ()
    bastion_version: str = bastion.__version__
    torch_version: str = torch.__version__
    python_version: str = platform.python_version()
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def build(self) -> nn.Module:
        """A freshly initialised model of this architecture (with the user's adapter, for a factory)."""
        if self.architecture == "external":
            if self.factory is None:
                raise CheckpointError("an external model's metadata must name its factory")
            return load_external(self.factory, **self.adapter)
        return build_model(self.architecture, **self.arch_kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = FORMAT
        d["input_shape"] = list(self.input_shape)
        d["mean"], d["std"], d["bounds"] = list(self.mean), list(self.std), list(self.bounds)
        d["events"] = list(self.events)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "checkpoint") -> CheckpointMeta:
        if d.get("format") != FORMAT:
            raise CheckpointError(f"{source}: metadata format {d.get('format')!r} is not {FORMAT!r}")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(
                **{
                    k: v
                    for k, v in d.items()
                    if k in known and k not in ("input_shape", "mean", "std", "bounds", "events")
                },
                input_shape=tuple(d["input_shape"]),
                mean=tuple(d["mean"]),
                std=tuple(d["std"]),
                bounds=tuple(d.get("bounds", (0.0, 1.0))),
                events=tuple(d.get("events", ())),  # absent from checkpoints saved before events existed
            )
        except (KeyError, TypeError) as e:
            raise CheckpointError(f"{source}: metadata is incomplete ({e}); re-save the checkpoint") from None


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """Write `model`'s weights and `meta` to `path` atomically (temporary file, then rename)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta.to_dict())})
    return Path(path)


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of the checkpoint at `path`, read from the header alone."""
    path = check_file(path)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupted or truncated ({e}); re-save or re-train it") from None
    if _META_KEY not in header:
        raise CheckpointError(
            f"{path} holds weights but no bastion metadata; load your own model with "
            "--model package.module:factory --weights FILE"
        )
    try:
        return CheckpointMeta.from_dict(json.loads(header[_META_KEY]), source=str(path))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from None


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model saved at `path` and load its weights. Returns (model in eval mode, metadata)."""
    meta = read_meta(path)
    state = load_state_dict_file(path)
    try:
        model = meta.build()
    except BastionError as e:
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        detail = lines[1].strip() if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path}: the weights do not fit architecture {meta.architecture!r} ({detail})") from None
    return model.to(device).eval(), meta
