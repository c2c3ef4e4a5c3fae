"""`wrn28_10`: the WideResNet-28-10 of the TRADES, AutoAttack and RobustBench code bases.

Zagoruyko and Komodakis, "Wide Residual Networks", arXiv 1605.07146, in the form of
yaodongyu/TRADES `models/wideresnet.py` (Zhang et al., arXiv 1901.08573), also RobustBench's
`WideResNet` used with AutoAttack (Croce and Hein, arXiv 2003.01690): a 3x3 stem with 16 channels,
three stages of (depth - 4) / 6 `PreActBlock`s at 16k, 32k and 64k channels (k the widening factor),
a final BN-ReLU, global average pooling and a linear layer. Initialisation as there: Kaiming-normal
(fan-out) convolutions, zero linear bias. TRADES' unused `sub_block1` (a RobustBench option, off by
default) is left out. Parameters for depth 28, k = 10 and K = 10: 36,479,194 on 3x32x32, pinned in
`tests/models/test_architectures.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bastion.core.errors import ConfigError
from bastion.core.registry import MODELS
from bastion.models._layers import check_int, checked_normalize, preact_network

__all__ = ["wrn28_10"]


def _wrn_init(module: nn.Module) -> None:
    """TRADES' initialisation: N(0, 2 / (9 out_channels)) convolutions, zero linear bias, BN at (1, 0)."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.Linear):
        nn.init.zeros_(module.bias)


@MODELS.register("wrn28_10")
def wrn28_10(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    depth: int = 28,
    widen_factor: int = 10,
    drop_rate: float = 0.0,
) -> nn.Sequential:
    """Build WideResNet-`depth`-`widen_factor` (28 and 10 by default).

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs, at least 8 (global average pooling takes any size).
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.
        depth: Number of layers, 6n + 4 for n blocks per stage (28: four blocks per stage).
        widen_factor: Width multiplier k of the three stages (16k, 32k, 64k channels).
        drop_rate: Dropout probability between the two convolutions of each block (0 in TRADES).

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K); the last feature map is
        (N, 64k, s/4, s/4).
    """
    normalize = checked_normalize(
        "wrn28_10",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=8,
    )
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 10 or (depth - 4) % 6:
        raise ConfigError(
            f"model 'wrn28_10': depth must be 6n + 4, n >= 1 blocks per stage (10, 16, 22, 28, 34, ...), got {depth!r}"
        )
    check_int("wrn28_10", "widen_factor", widen_factor, minimum=1)
    if not isinstance(drop_rate, int | float) or isinstance(drop_rate, bool) or not 0.0 <= drop_rate < 1.0:
        raise ConfigError(f"model 'wrn28_10': drop_rate must be a number in [0, 1), got {drop_rate!r}")
    n = (depth - 4) // 6
    k = widen_factor
    model = preact_network(
        normalize,
        in_channels=in_channels,
        stem_channels=16,
        widths=(16 * k, 32 * k, 64 * k),
        blocks=(n, n, n),
        num_classes=num_classes,
        drop_rate=float(drop_rate),
    )
    model.apply(_wrn_init)
    return model
