"""`vgg11_bn`: VGG-11 (configuration A) with BatchNorm, in its CIFAR form.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
arXiv 1409.1556, configuration A, with BatchNorm after every convolution, and the CIFAR head of
kuangliu/pytorch-cifar `models/vgg.py`: eight conv3x3(bias)-BN-ReLU layers (64, M, 128, M, 256, 256,
M, 512, 512, M, 512, 512, M; M a 2x2 max-pooling) and one Linear(512, K). PyTorch's default
initialisation, as there. Two departures that change nothing on 32x32 inputs: the poolings round up
(`ceil_mode`) and a global average pooling precedes the linear layer, so that 28x28 (and any size from
8) works. Parameters for K = 10: 9,231,114 on 3x32x32, pinned in `tests/models/test_architectures.py`
(kuangliu's code gives the same count). chenyaofo/pytorch-cifar-models' `cifar10_vgg11_bn` differs:
its head is Linear(512, 512)-ReLU-Dropout-Linear(512, 512)-ReLU-Dropout-Linear(512, K) (9,756,426).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from bastion.core.registry import MODELS
from bastion.models._layers import checked_normalize, pooled_classifier

__all__ = ["vgg11_bn"]

_CONFIG_A: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""Output channels of each 3x3 convolution; "M" is a 2x2 max-pooling."""


def _features(in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in _CONFIG_A:
        if item == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # halves the side, rounding up
        else:
            width = int(item)
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
    return nn.Sequential(*layers)


@MODELS.register("vgg11_bn")
def vgg11_bn(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Sequential:
    """Build VGG-11 with BatchNorm.

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs, at least 8 (global average pooling takes any size).
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K); the last feature map is
        (N, 512, ceil(s/32), ceil(s/32)).
    """
    normalize = checked_normalize(
        "vgg11_bn",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=8,
    )
    return nn.Sequential(
        OrderedDict(
            [
                ("normalize", normalize),
                ("features", _features(in_channels)),  # (N, 512, ceil(s/32), ceil(s/32))
                *pooled_classifier(512, num_classes),  # (N, K)
            ]
        )
    )
