"""`small_cnn`: the house default for MNIST-size images, quick to train on two CPU cores.

Two conv-ReLU-maxpool stages (32 and 64 channels, 3x3, padding 1) and a 128-unit hidden layer:
conv(C, 32) - ReLU - pool2 - conv(32, 64) - ReLU - pool2 - flatten - Linear(64 (s/4)^2, 128) - ReLU -
Linear(128, K). Not from a paper: the common small-CNN baseline of the adversarial-examples literature,
sized for speed. Parameters for K = 10: 421,642 on 1x28x28 (MNIST), 545,098 on 3x32x32 (CIFAR-10),
pinned in `tests/models/test_architectures.py`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from bastion.core.registry import MODELS
from bastion.models._layers import checked_normalize

__all__ = ["small_cnn"]


@MODELS.register("small_cnn")
def small_cnn(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Sequential:
    """Build `small_cnn`.

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs, at least 4 (28 for MNIST, 32 for CIFAR, 8 for the
            8x8 digits); sizes not divisible by 4 lose their last rows and columns to the pooling.
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K).
    """
    normalize = checked_normalize(
        "small_cnn",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=4,
    )
    side = image_size // 4  # after two 2x2 max-poolings
    return nn.Sequential(
        OrderedDict(
            normalize=normalize,
            conv1=nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),  # (N, 32, s, s)
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),  # (N, 32, s/2, s/2)
            conv2=nn.Conv2d(32, 64, kernel_size=3, padding=1),  # (N, 64, s/2, s/2)
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),  # (N, 64, s/4, s/4)
            flatten=nn.Flatten(),  # (N, 64 (s/4)^2)
            fc1=nn.Linear(64 * side * side, 128),  # (N, 128)
            relu3=nn.ReLU(),
            fc2=nn.Linear(128, num_classes),  # (N, K)
        )
    )
