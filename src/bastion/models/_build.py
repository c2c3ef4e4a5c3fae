"""`build_model`: the one way to build a registered architecture by name.

The architectures register themselves in `bastion.core.registry.MODELS` when their modules are imported. Importing
any module of `bastion.models`, this one included, runs the package's `__init__` first, which imports every one of
them, so they are all registered by the time `build_model` is called.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from torch import nn

from bastion.core.errors import ConfigError, ModelError
from bastion.core.registry import MODELS

__all__ = ["build_model"]

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
