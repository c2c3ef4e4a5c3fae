"""`preact_resnet18`: the pre-activation ResNet-18 of the adversarial-training literature.

He, Zhang, Ren and Sun, "Identity Mappings in Deep Residual Networks", arXiv 1603.05027, in its
CIFAR form from kuangliu/pytorch-cifar as used by Wong et al., "Fast is better than free", arXiv
2001.03994, and Rice et al., "Overfitting in adversarially robust deep learning", arXiv 2002.11569:
a 3x3 stem with 64 channels, four stages of two `PreActBlock`s at 64, 128, 256 and 512 channels (1x1
convolution shortcuts where the shape changes), a final BN-ReLU, global average pooling and a linear
layer. PyTorch's default initialisation, as in those code bases. Parameters for K = 10: 11,172,170 on
3x32x32, pinned in `tests/models/test_architectures.py`; that is the count of the locuslab code
(`fast_adversarial/CIFAR10/preact_resnet.py`, `robust_overfitting/preactresnet.py`). kuangliu's own
`PreActResNet18` has no final BN-ReLU and 1,024 parameters fewer (11,171,146). The blocks are Rice et
al.'s: fast_adversarial's apply the projection shortcut to the raw input rather than the pre-activated
one, so its weights fit this model but give slightly different logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bastion.core.registry import MODELS
from bastion.models._layers import checked_normalize, preact_network

__all__ = ["preact_resnet18"]


@MODELS.register("preact_resnet18")
def preact_resnet18(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Sequential:
    """Build PreAct ResNet-18.

    Args:
        num_classes: Number of logits K.
        in_channels: Channels of the input images.
        image_size: Side s of the square inputs, at least 8 (global average pooling takes any size).
        mean: Per-channel mean of the first layer's normalisation; 0 when not given.
        std: Per-channel std of the first layer's normalisation; 1 when not given.

    Returns:
        A model mapping inputs (N, C, s, s) in [0, 1] to logits (N, K); the last feature map is
        (N, 512, s/8, s/8).
    """
    normalize = checked_normalize(
        "preact_resnet18",
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        min_image_size=8,
    )
    return preact_network(
        normalize,
        in_channels=in_channels,
        stem_channels=64,
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        num_classes=num_classes,
    )
