"""`random-noise`: uniform noise in the L-inf ball, the baseline every protection must beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.poisoning.protect.base import DataProtection, ModelFactory, linf_radius
from bastion.core.params import param
from bastion.core.progress import ProgressFn

__all__ = ["RandomNoise"]


@register_attack("random-noise")
@dataclass(frozen=True, kw_only=True)
class RandomNoise(DataProtection):
    """Uniform random noise, `delta ~ U(-eps, eps)` per pixel and channel, clipped to [0, 1]: the
    baseline of the unlearnable-examples papers (Huang et al., ICLR 2021, Table 1; Chen et al., ICLR
    2023). A protection earns its name by taking the test accuracy well below what noise of the same
    radius does; noise itself should cost a few points at most.
    """

    eps: float | None = param(None, gt=0, le=1, help="L-inf radius; default 0.3 (grayscale) or 8/255 (colour)")

    def _protect(
        self,
        x: Tensor,
        y: Tensor,
        num_classes: int,
        gen: torch.Generator,
        build: ModelFactory | None,
        progress: ProgressFn | None,
    ) -> tuple[Tensor, dict[str, Any]]:
        eps = linf_radius(self.eps, tuple(x.shape[1:]), grayscale=0.3, colour=8 / 255)
        noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
        return (x + noise.to(x)).clamp(0, 1), {"eps": eps}
