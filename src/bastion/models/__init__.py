"""Image-classifier architectures by name, and `build_model`, the one way to build them by name.

Every architecture maps inputs in [0, 1], NCHW, to logits (N, num_classes); its first layer is
`bastion.core.ops.Normalize(mean, std)` (the identity unless mean and std are given), so the
normalisation travels with the weights. Each is a factory registered in `bastion.core.registry.MODELS`
with keyword-only arguments: `num_classes`, `in_channels`, `image_size`, `mean`, `std`, plus its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import nn

from bastion.core.errors import ConfigError, ModelError
from bastion.core.registry import MODELS
from bastion.models.checkpoint import CheckpointMeta, load_checkpoint, read_meta, save_checkpoint
from bastion.models.external import ExternalModel, load_external
from bastion.models.lenet import lenet
from bastion.models.mlp import mlp
from bastion.models.preact_resnet import preact_resnet18
from bastion.models.resnet import resnet20
from bastion.models.small_cnn import small_cnn
from bastion.models.vgg import vgg11_bn
from bastion.models.wrn import wrn28_10

__all__ = [
    "CheckpointMeta",
    "ExternalModel",
    "build_model",
    "lenet",
    "load_checkpoint",
    "load_external",
    "mlp",
    "preact_resnet18",
    "read_meta",
    "resnet20",
    "save_checkpoint",
    "small_cnn",
    "vgg11_bn",
    "wrn28_10",
]

_SHARED_KEYWORDS = ("num_classes", "in_channels", "image_size", "mean", "std")


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build the architecture registered as `name`.

    Args:
        name: A name in `MODELS` (`small_cnn`, `lenet`, `mlp`, `resnet20`, `preact_resnet18`,
            `wrn28_10`, `vgg11_bn`, ...).
        num_classes: Number of logits K, at least 2.
        in_channels: Channels of the input images (1 for MNIST, 3 for CIFAR).
        image_size: Side s of the square input images; each architecture has a smallest size.
        mean: Per-channel mean of the model's normalisation; 0 on every channel when not given.
        std: Per-channel std of the model's normalisation; 1 on every channel when not given.
        **kwargs: The architecture's own keywords, such as `hidden` for `mlp` or `widen_factor` for
            `wrn28_10`.

    Returns:
        A freshly initialised model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K).

    Raises:
        UnknownNameError: `name` is not registered (the message suggests the closest name).
        ConfigError: An argument is out of range, or a keyword is not one the architecture takes.
        ModelError: The registered factory did not return an `nn.Module`.
    """
    factory = MODELS.get(name)
    own = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _SHARED_KEYWORDS
    ]
    unknown = sorted(set(kwargs) - set(own))
    if unknown:
        takes = ", ".join(own) if own else "none besides " + ", ".join(_SHARED_KEYWORDS)
        raise ConfigError(f"model {name!r} takes no keyword {unknown[0]!r}; its own keywords are: {takes}")
    model = factory(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std, **kwargs
    )
    if not isinstance(model, nn.Module):
        raise ModelError(f"the factory registered as model {name!r} returned {type(model).__name__}, not an nn.Module")
    return model
