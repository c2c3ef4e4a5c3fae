"""`mlp`: a multilayer perceptron on flattened pixels, the simplest baseline.

flatten - (Linear - ReLU) per hidden layer - Linear to K. Not from a paper. Parameters with the
default hidden layers (256, 256) for K = 10: 269,322 on 1x28x28 and 855,050 on 3x32x32, pinned in
`tests/models/test_architectures.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from bastion.core.errors import ConfigError
from bastion.core.registry import MODELS
from bastion.models._layers import check_int, checked_normalize

__all__ = ["mlp"]


@MODELS.register("mlp")
def mlp(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    hidden: Sequence[int] = (256, 256),
) -> nn.Sequential:
    """Build the perceptron.

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs.
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.
        hidden: Width of each hidden layer, in order; empty for a linear classifier.

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K).
    """
    normalize = checked_normalize(
        "mlp",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=1,
    )
    if not isinstance(hidden, Sequence) or isinstance(hidden, str | bytes):
        raise ConfigError(f"model 'mlp': hidden must be a sequence of layer widths such as (256, 256), got {hidden!r}")
    for width in hidden:
        check_int("mlp", "hidden", width, minimum=1, why=" for every layer width")
    widths = [in_channels * image_size * image_size, *hidden]
    model = nn.Sequential()
    model.add_module("normalize", normalize)
    model.add_module("flatten", nn.Flatten())  # (N, C s^2)
    for i, (n_in, n_out) in enumerate(pairwise(widths)):
        model.add_module(f"fc{i + 1}", nn.Linear(n_in, n_out))
        model.add_module(f"relu{i + 1}", nn.ReLU())
    model.add_module(f"fc{len(widths)}", nn.Linear(widths[-1], num_classes))  # (N, K)
    return model
