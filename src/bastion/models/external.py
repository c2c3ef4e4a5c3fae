"""A user's own model, imported as `package.module:factory`, adapted so bastion sees logits for [0, 1] inputs.

The friction users report most when bringing a model to an attack toolkit is the glue: the model
normalises outside itself, expects another input range, or returns a tuple or a dict. `ExternalModel`
takes care of all three, so every other layer of bastion sees a plain classifier:

    [0, 1] input -> scale to the model's `bounds` -> `(x - mean) / std` -> model -> pick the logits.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.core.errors import CheckpointError, ConfigError, ModelError, did_you_mean
from bastion.core.ops import Normalize
from bastion.models._weights import load_state_dict_file

__all__ = ["ExternalModel", "import_factory", "load_external", "load_weights_into"]

# Keys under which training scripts commonly nest a state dict inside a .pt file.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")


class ExternalModel(nn.Module):
    """Adapts a classifier to bastion's convention: inputs in [0, 1], logits out.

    Args:
        model: the user's module.
        mean, std: the normalisation the model expects, per channel, in the model's input units
            (after scaling to `bounds`); `None` when the model normalises itself or needs none.
        bounds: the input range the model was trained on, e.g. (0, 255) or (-1, 1).
        logits_key: where the logits are in the model's output: a dict key, a tuple index or an
            attribute name; `None` when the model returns a tensor.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        logits_key: str | None = None,
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ConfigError("give both --mean and --std, or neither")
        lo, hi = float(bounds[0]), float(bounds[1])
        if not lo < hi:
            raise ConfigError(f"--bounds must be LOW,HIGH with LOW < HIGH; got {bounds}")
        self.model = model
        self.bounds = (lo, hi)
        self.norm: nn.Module = Normalize(mean, std) if mean is not None and std is not None else nn.Identity()
        self.logits_key = logits_key

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, H, W) in [0, 1]
        lo, hi = self.bounds
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        return select_logits(self.model(self.norm(x)), self.logits_key)

    def adapter_settings(self) -> dict[str, Any]:
        """The arguments that rebuild this adapter (stored in a checkpoint's metadata)."""
        norm = self.norm
        return {
            "mean": norm.mean.flatten().tolist() if isinstance(norm, Normalize) else None,
            "std": norm.std.flatten().tolist() if isinstance(norm, Normalize) else None,
            "bounds": list(self.bounds),
            "logits_key": self.logits_key,
        }


def select_logits(out: object, key: str | None) -> Tensor:
    """The logits tensor inside a model's output, by `key`; a clear `ModelError` when it is not there."""
    if key is None:
        if isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping):
            raise ModelError(
                f"the model returned a dict with keys {sorted(map(str, out))}; name the logits with --logits-key KEY"
            )
        if isinstance(out, tuple | list):
            raise ModelError(
                f"the model returned a {type(out).__name__} of {len(out)} items; name the logits with "
                "--logits-key INDEX (e.g. --logits-key 0)"
            )
        if isinstance(getattr(out, "logits", None), Tensor):
            raise ModelError(
                f"the model returned a {type(out).__name__} object; name the logits with --logits-key logits"
            )
        raise ModelError(f"the model returned {type(out).__name__}, not a tensor of logits")
    if isinstance(out, Mapping):
        if key not in out:
            raise ModelError(
                f"--logits-key {key!r} is not in the model's output; its keys are {sorted(map(str, out))}."
                + did_you_mean(key, map(str, out))
            )
        picked = out[key]
    elif isinstance(out, tuple | list):
        if not key.lstrip("-").isdigit() or not -len(out) <= int(key) < len(out):
            raise ModelError(f"--logits-key must be an index below {len(out)} for a tuple output; got {key!r}")
        picked = out[int(key)]
    elif hasattr(out, key):
        picked = getattr(out, key)
    else:
        raise ModelError(f"--logits-key {key!r}: the model's output ({type(out).__name__}) has no such item")
    if not isinstance(picked, Tensor):
        raise ModelError(f"--logits-key {key!r} selects a {type(picked).__name__}, not a tensor of logits")
    return picked


def import_factory(spec: str) -> nn.Module:
    """Import `package.module:factory` and call it with no arguments; it must return an `nn.Module`."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"a model import string looks like package.module:factory; got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelError(f"cannot import {module_name!r} (from {spec!r}): {e}; is it on PYTHONPATH?") from None
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_")]
        raise ModelError(f"module {module_name!r} has no attribute {attr!r}.{did_you_mean(attr, public)}")
    factory = getattr(module, attr)
    if not callable(factory):
        raise ModelError(f"{spec!r} is a {type(factory).__name__}, not a class or function returning a model")
    try:
        model = factory()
    except Exception as e:
        raise ModelError(f"calling {spec}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _read_weights(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_state_dict_file(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found")
    try:
        # weights_only: PyTorch's restricted loader, which rebuilds tensors and containers and nothing else
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} cannot be read as plain weights ({type(e).__name__}); save model.state_dict() with "
            "safetensors.torch.save_file and pass that file"
        ) from None
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def load_weights_into(model: nn.Module, path: str | Path) -> None:
    """Load a state dict (safetensors, or a .pt/.pth read with `weights_only=True`) into `model`."""
    path = Path(path)
    state = _read_weights(path)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {result.missing_keys[:3]}{' ...' if len(result.missing_keys) > 3 else ''}")
    if result.unexpected_keys:
        unexpected = result.unexpected_keys
        problems.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{path} does not fit the model: {'; '.join(problems)}")


def load_external(
    factory: str,
    *,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    bounds: Sequence[float] = (0.0, 1.0),
    logits_key: str | None = None,
) -> ExternalModel:
    """Build the user's model from `factory`, load `weights` into it, and adapt it (see `ExternalModel`)."""
    model = import_factory(factory)
    if weights is not None:
        try:
            load_weights_into(model, weights)
        except RuntimeError as e:  # shape mismatches
            raise CheckpointError(f"{weights} does not fit {factory}: {str(e).splitlines()[-1].strip()}") from None
    return ExternalModel(model, mean=mean, std=std, bounds=(bounds[0], bounds[1]), logits_key=logits_key)
