"""`resnet20`: the CIFAR ResNet-20 of He et al. with parameter-free (option A) shortcuts.

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", arXiv 1512.03385, section 4.2:
a 3x3 conv with 16 channels, three stages of three basic blocks at 16, 32 and 64 channels (stride 2
at the start of the second and third), global average pooling and a linear layer. When a block halves
the resolution and doubles the width, its shortcut subsamples by 2 and pads the new channels with
zeros (option A), so it has no parameters. Initialisation as in akamaster/pytorch_resnet_cifar10
(Kaiming-normal convolution and linear weights). Parameters for K = 10: 272,474 on 3x32x32 (the
paper's 0.27 M), pinned in `tests/models/test_architectures.py`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.registry import MODELS
from bastion.models._layers import checked_normalize, conv3x3, make_stage, pooled_classifier

__all__ = ["BasicBlock", "resnet20"]


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        """Build the block.

        Args:
            in_channels: Channels of the input.
            out_channels: Channels of the output, at least `in_channels`.
            stride: Stride of the first convolution and of the shortcut's subsampling.
        """
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (N, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride]  # (N, C_in, H/s, W/s)
        if self.extra_channels:
            # Option A: the new channels are zeros, split evenly before and after the old ones.
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))  # (N, C_out, H/s, W/s)
        return F.relu(out + shortcut)


def _kaiming_init(module: nn.Module) -> None:
    """akamaster's initialisation: Kaiming-normal (fan-in) weights for convolutions and the linear layer."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight)


@MODELS.register("resnet20")
def resnet20(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Sequential:
    """Build ResNet-20.

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs, at least 8 (global average pooling takes any size).
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K).
    """
    normalize = checked_normalize(
        "resnet20",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=8,
    )
    stem = nn.Sequential(
        OrderedDict(conv=conv3x3(in_channels, 16), bn=nn.BatchNorm2d(16), relu=nn.ReLU())
    )  # (N, 16, s, s)
    model = nn.Sequential(
        OrderedDict(
            [
                ("normalize", normalize),
                ("stem", stem),
                ("stage1", make_stage(BasicBlock, 16, 16, 3, stride=1)),  # (N, 16, s, s)
                ("stage2", make_stage(BasicBlock, 16, 32, 3, stride=2)),  # (N, 32, s/2, s/2)
                ("stage3", make_stage(BasicBlock, 32, 64, 3, stride=2)),  # (N, 64, s/4, s/4)
                *pooled_classifier(64, num_classes),  # (N, K)
            ]
        )
    )
    model.apply(_kaiming_init)
    return model
