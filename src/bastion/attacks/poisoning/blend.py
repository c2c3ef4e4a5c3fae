"""`blend`: a key image blended into the whole picture, label changed (Chen et al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.poisoning.base import PoisoningAttack
from bastion.core.params import param
from bastion.core.random import make_generator

__all__ = ["Blend"]


@register_attack("blend")
@dataclass(frozen=True, kw_only=True)
class Blend(PoisoningAttack):
    """The blended-injection backdoor. Chen, Liu, Li, Lu, Song, "Targeted Backdoor Attacks on Deep
    Learning Systems Using Data Poisoning", arXiv 1712.05526; defaults as `vtu81/backdoor-toolbox`
    (`poison_tool_box/blend.py`).

    `x' = (1 - alpha) x + alpha k` with a full-size key image k: alpha 0.2 while poisoning and
    `alpha_test` (0.2) when triggering. The reference's key is a cartoon; bastion's is uniform noise
    drawn with the attack's seed (the paper's random-pattern key), so no image file is needed.
    """

    alpha: float = param(0.2, gt=0, le=1, help="blend weight of the key in the poisoned training images")
    alpha_test: float = param(0.2, gt=0, le=1, help="blend weight of the key when triggering test images")

    def key(self, shape: tuple[int, ...]) -> Tensor:
        """The key image (C, H, W), uniform in [0, 1], seeded by the attack's seed."""
        return torch.rand(shape, generator=make_generator(self.seed))

    def _blend(self, x: Tensor, alpha: float) -> Tensor:
        return (1 - alpha) * x + alpha * self.key(tuple(x.shape[1:])).to(x)

    def _poison_images(self, x: Tensor) -> Tensor:
        return self._blend(x, self.alpha)

    def apply_trigger(self, x: Tensor) -> Tensor:
        return self._blend(x, self.alpha_test)
