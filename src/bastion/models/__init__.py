"""Image-classifier architectures by name, and `build_model`, the one way to build them by name.

Every architecture maps inputs in [0, 1], NCHW, to logits (N, num_classes); its first layer is
`bastion.core.ops.Normalize(mean, std)` (the identity unless mean and std are given), so the
normalisation travels with the weights. Each is a factory registered in `bastion.core.registry.MODELS`
with keyword-only arguments: `num_classes`, `in_channels`, `image_size`, `mean`, `std`, plus its own.
"""

from __future__ import annotations

from bastion.models._build import build_model
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
