"""Argument checks and blocks shared by the architectures of `bastion.models`."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.errors import ConfigError
from bastion.core.ops import Normalize

__all__ = [
    "MAX_IN_CHANNELS",
    "PreActBlock",
    "check_int",
    "checked_normalize",
    "conv3x3",
    "make_stage",
    "pooled_classifier",
    "preact_network",
]

MAX_IN_CHANNELS = 64
"""The most input channels a factory accepts (multispectral images have about a dozen)."""


def check_int(arch: str, param: str, value: object, *, minimum: int, maximum: int | None = None, why: str = "") -> None:
    """Raise `ConfigError` naming the model and the parameter unless `value` is an int in [minimum, maximum].

    Args:
        arch: Registered name of the architecture, for the message.
        param: Name of the parameter, for the message.
        value: The value received.
        minimum: Smallest value allowed.
        maximum: Largest value allowed; `None` for no bound.
        why: Text appended to the rule in the message, such as the reason for the bound.
    """
    in_range = isinstance(value, int) and value >= minimum and (maximum is None or value <= maximum)
    if in_range and not isinstance(value, bool):
        return
    allowed = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    raise ConfigError(f"model {arch!r}: {param} must be {allowed}{why}, got {value!r}")


def _per_channel(
    arch: str, param: str, values: Sequence[float] | None, in_channels: int, default: float
) -> list[float]:
    """`values` as floats, one per input channel; `default` for every channel when `values` is None."""
    if values is None:
        return [default] * in_channels
    if (
        isinstance(values, Sequence)
        and not isinstance(values, str | bytes)
        and len(values) == in_channels
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        return [float(v) for v in values]
    raise ConfigError(
        f"model {arch!r}: {param} must be a sequence of {in_channels} finite numbers, one per input channel "
        f"(in_channels={in_channels}), got {values!r}"
    )


def checked_normalize(
    arch: str,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    min_image_size: int,
) -> Normalize:
    """Check the arguments every architecture takes, and build the model's first layer.

    Args:
        arch: Registered name of the architecture, for messages.
        num_classes: Number of logits; at least 2.
        in_channels: Channels of the input images, from 1 to `MAX_IN_CHANNELS`.
        image_size: Height and width of the (square) input images.
        mean: Per-channel mean subtracted from inputs in [0, 1]; `None` for 0 on every channel.
        std: Per-channel divisor; `None` for 1 on every channel.
        min_image_size: Smallest `image_size` the architecture handles.

    Returns:
        `Normalize(mean, std)`: the identity when neither is given.

    Raises:
        ConfigError: An argument is out of range or of the wrong type.
    """
    check_int(arch, "num_classes", num_classes, minimum=2)
    check_int(arch, "in_channels", in_channels, minimum=1, maximum=MAX_IN_CHANNELS)
    check_int(
        arch,
        "image_size",
        image_size,
        minimum=min_image_size,
        why=f" (the smallest input {arch} takes is {min_image_size}x{min_image_size})",
    )
    return Normalize(
        _per_channel(arch, "mean", mean, in_channels, default=0.0),
        _per_channel(arch, "std", std, in_channels, default=1.0),
    )


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def make_stage(
    block: Callable[[int, int, int], nn.Module], in_channels: int, out_channels: int, blocks: int, stride: int
) -> nn.Sequential:
    """`blocks` residual blocks in a row: the first changes width and stride, the others keep them.

    Args:
        block: Builds one block from (in_channels, out_channels, stride).
        in_channels: Channels entering the stage.
        out_channels: Channels of every block's output.
        blocks: Number of blocks.
        stride: Stride of the first block (1 keeps the resolution, 2 halves it).
    """
    first = block(in_channels, out_channels, stride)
    return nn.Sequential(first, *(block(out_channels, out_channels, 1) for _ in range(blocks - 1)))


def pooled_classifier(channels: int, num_classes: int) -> list[tuple[str, nn.Module]]:
    """Global average pooling, flatten, linear: the head that lets a network take any input size."""
    return [
        ("pool", nn.AdaptiveAvgPool2d(1)),  # (N, C, h, w) -> (N, C, 1, 1)
        ("flatten", nn.Flatten()),  # -> (N, C)
        ("fc", nn.Linear(channels, num_classes)),  # -> (N, K)
    ]


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus a shortcut.

    He et al., "Identity Mappings in Deep Residual Networks", arXiv 1603.05027 (fig. 4e). The same block
    is kuangliu/pytorch-cifar's `PreActBlock` (used by Rice et al.) and the TRADES/RobustBench
    `WideResNet` `BasicBlock`: the shortcut is the identity on the raw input when width and stride are
    unchanged, else a 1x1 convolution of the pre-activated input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        """Build the block.

        Args:
            in_channels: Channels of the input.
            out_channels: Channels of the output.
            stride: Stride of the first convolution and of the projection shortcut.
            drop_rate: Dropout probability between the two convolutions (WideResNet); 0 for none.
        """
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))  # (N, C_in, H, W)
        shortcut = x if self.shortcut is None else self.shortcut(out)  # (N, C_out, H/s, W/s)
        out = self.conv1(out)  # (N, C_out, H/s, W/s)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + shortcut


def preact_network(
    normalize: Normalize,
    *,
    in_channels: int,
    stem_channels: int,
    widths: Sequence[int],
    blocks: Sequence[int],
    num_classes: int,
    drop_rate: float = 0.0,
) -> nn.Sequential:
    """A pre-activation residual network for small images (PreAct ResNet, WideResNet).

    normalize - conv3x3 stem - stages of `PreActBlock` (the first at stride 1, the others at stride 2) -
    BN - ReLU - global average pooling - linear. The final BN-ReLU is there because pre-activation
    blocks leave their sum un-normalised (He et al. 2016b, arXiv 1603.05027).

    Args:
        normalize: The model's first layer.
        in_channels: Channels of the input images.
        stem_channels: Channels of the stem convolution.
        widths: Output channels of each stage.
        blocks: Number of blocks in each stage.
        num_classes: Number of logits.
        drop_rate: Dropout probability inside each block.
    """
    block = partial(PreActBlock, drop_rate=drop_rate)
    layers: list[tuple[str, nn.Module]] = [("normalize", normalize), ("stem", conv3x3(in_channels, stem_channels))]
    channels = stem_channels
    for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
        layers.append((f"stage{i + 1}", make_stage(block, channels, width, n, stride=1 if i == 0 else 2)))
        channels = width
    layers += [("bn", nn.BatchNorm2d(channels)), ("relu", nn.ReLU()), *pooled_classifier(channels, num_classes)]
    return nn.Sequential(OrderedDict(layers))
