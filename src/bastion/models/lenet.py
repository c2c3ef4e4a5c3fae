"""`lenet`: LeNet-5 in the form commonly used with PyTorch, with ReLU and max-pooling.

LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 86(11), 1998 (no arXiv id). conv 6@5x5 - pool - conv 16@5x5 - pool - FC 120 - FC 84 - FC K.
The paper used scaled tanh and trainable sub-sampling; this is the modern convention (ReLU, 2x2
max-pooling), as in most PyTorch code. Inputs smaller than 32x32 are zero-padded by 2 in the first
convolution, so a 28x28 MNIST digit sees the paper's 32x32 geometry (a 16x5x5 map before FC 120).
Parameters for K = 10: 61,706 on 1x28x28 (the well-known LeNet-5 count) and 62,006 on 3x32x32,
pinned in `tests/models/test_architectures.py`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from bastion.core.registry import MODELS
from bastion.models._layers import checked_normalize

__all__ = ["lenet"]


@MODELS.register("lenet")
def lenet(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Sequential:
    """Build LeNet-5.

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs, at least 12; below 32 the first convolution pads by 2.
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K).
    """
    normalize = checked_normalize(
        "lenet",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=12,
    )
    padding = 2 if image_size < 32 else 0
    side = ((image_size + 2 * padding - 4) // 2 - 4) // 2  # 5 for 28 (padded) and 32
    return nn.Sequential(
        OrderedDict(
            normalize=normalize,
            conv1=nn.Conv2d(in_channels, 6, kernel_size=5, padding=padding),  # (N, 6, s+2p-4, s+2p-4)
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),  # (N, 6, 14, 14) for s = 28 or 32
            conv2=nn.Conv2d(6, 16, kernel_size=5),  # (N, 16, 10, 10)
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),  # (N, 16, 5, 5)
            flatten=nn.Flatten(),  # (N, 400)
            fc1=nn.Linear(16 * side * side, 120),
            relu3=nn.ReLU(),
            fc2=nn.Linear(120, 84),
            relu4=nn.ReLU(),
            fc3=nn.Linear(84, num_classes),  # (N, K)
        )
    )
