"""Batched data augmentation on tensors already on the device (no per-image Python loop)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Augment", "augment_batch"]

Augment = Literal["none", "shift", "crop-flip"]


def random_crop(x: Tensor, pad: int, gen: torch.Generator) -> Tensor:
    """Zero-pad by `pad` pixels and crop back to size at a random offset per image (random translation)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (N, C, H+2p, W+2p)
    di = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    dj = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    rows = (di[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dj[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen, device=gen.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment_batch(x: Tensor, kind: Augment, gen: torch.Generator) -> Tensor:
    """`shift`: translate by up to 2 pixels (digits); `crop-flip`: 4-pixel pad-and-crop plus mirror (CIFAR)."""
    if kind == "none":
        return x
    if kind == "shift":
        return random_crop(x, 2, gen)
    return random_flip(random_crop(x, 4, gen), gen)
