"""`badnets`: a patch stamped on the image, label changed (Gu, Dolan-Gavitt, Garg, 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.poisoning.base import PoisoningAttack
from bastion.core.errors import ConfigError
from bastion.core.params import param

__all__ = ["BadNets", "patch_mask"]


def patch_mask(shape: tuple[int, int, int], size: int, corners: Literal["one", "all"]) -> tuple[Tensor, Tensor]:
    """The mask m and pattern p (C, H, W) of a `size` x `size` checkerboard patch in the bottom-right
    corner (or in all four, mirrored so each corner shows the same patch to a flipped image)."""
    _, h, w = shape
    cells = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 == 0  # 1 at the patch's corners
    mask, pattern = torch.zeros(shape), torch.zeros(shape)
    spots = [(h - size, w - size)]
    if corners == "all":
        spots += [(0, 0), (0, w - size), (h - size, 0)]
    for top, left in spots:
        mask[:, top : top + size, left : left + size] = 1
        flip_v, flip_h = top == 0, left == 0
        cell = cells.flip(0) if flip_v else cells
        cell = cell.flip(1) if flip_h else cell
        pattern[:, top : top + size, left : left + size] = cell.float()
    return mask, pattern


@register_attack("badnets")
@dataclass(frozen=True, kw_only=True)
class BadNets(PoisoningAttack):
    """BadNets. Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning
    Model Supply Chain", arXiv 1708.06733; stamping as in `vtu81/backdoor-toolbox`
    (`poison_tool_box/badnet.py`).

    The trigger overwrites a `size` x `size` patch in the bottom-right corner, `x' = (1 - m) x + m p`:
    white (`pattern="white"`, the common benchmark setting) or a checkerboard (`checker`). The paper's
    MNIST backdoors are a single bright pixel or a small pattern, all-to-one and all-to-all (`mode`).
    The stamp goes on before training-time augmentation: a flip moves it, so `corners="all"` stamps
    every corner.

    Reproduces: the paper's MNIST backdoor succeeds on about 99% of triggered images at an unchanged
    clean error; `tests/attacks/poisoning` checks ASR >= 95% at a 5% rate on `mnist5k` with at most a
    small loss of clean accuracy.
    """

    size: int = param(3, ge=1, help="side of the square patch, in pixels")
    pattern: Literal["white", "checker"] = param("white", help="white patch or checkerboard")
    corners: Literal["one", "all"] = param("one", help="bottom-right corner only, or all four")

    def apply_trigger(self, x: Tensor) -> Tensor:
        c, h, w = x.shape[1:]
        if self.size * (2 if self.corners == "all" else 1) > min(h, w):
            raise ConfigError(f"badnets: a {self.size}-pixel patch does not fit a {h}x{w} image")
        mask, pattern = patch_mask((c, h, w), self.size, self.corners)
        if self.pattern == "white":
            pattern = mask
        mask, pattern = mask.to(x), pattern.to(x)
        return (1 - mask) * x + mask * pattern
