"""Per-sample losses of the white-box attacks, each to be maximised, shape (N,).

CE, the margin ("CW") loss and the DLR losses of Croce & Hein (arXiv 2003.01690, section 3); the DLR
losses are invariant to shifting and positive scaling of the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from bastion.core.errors import ConfigError

__all__ = ["LossName", "ce", "dlr", "dlr_targeted", "make_loss", "margin", "max_other", "misclassified"]

LossName = Literal["ce", "margin", "dlr"]
LossFn = Callable[[Tensor], Tensor]


def max_other(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j per sample (N,)."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.amax(dim=1)


def ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j - z_y: positive exactly when the sample is misclassified."""
    return max_other(logits, y) - logits.gather(1, y[:, None]).squeeze(1)


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), pi = logits sorted descending (K >= 3)."""
    if logits.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes; the model has {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: Tensor, y: Tensor, t: Tensor) -> Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) (K >= 4)."""
    if logits.shape[1] < 4:
        raise ConfigError(f"the targeted DLR loss needs at least 4 classes; the model has {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, t[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def make_loss(name: LossName, y: Tensor, target: Tensor | None = None) -> LossFn:
    """The loss to maximise for labels `y`: untargeted, or (with `target`) towards the target class.

    Targeted CE is -CE(z, t); targeted margin is z_t - max_{j != t} z_j; targeted DLR is `dlr_targeted`.
    """
    if target is None:
        return {"ce": lambda z: ce(z, y), "margin": lambda z: margin(z, y), "dlr": lambda z: dlr(z, y)}[name]
    return {
        "ce": lambda z: -ce(z, target),
        "margin": lambda z: -margin(z, target),
        "dlr": lambda z: dlr_targeted(z, y, target),
    }[name]


def misclassified(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Success per sample (N,): untargeted, argmax != y; targeted, argmax == target."""
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y
