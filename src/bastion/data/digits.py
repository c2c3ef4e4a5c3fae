"""`digits`: scikit-learn's 1,797 handwritten digits, 8x8 pixels with values 0..16."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.core.random import make_generator
from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, split_dataset

__all__ = ["digits_pool", "load_digits"]


@DATASETS.register("digits")
def load_digits(path: Path | None = None, seed: int = 0) -> Dataset:
    """Load scikit-learn's 8x8 digits, divided by 16, with a seeded stratified 80/20 split.

    Args:
        path: Unused: the data ship inside scikit-learn.
        seed: Seed of the stratified split.

    Returns:
        Images (N, 1, 8, 8) in [0, 1] and labels 0..9.
    """
    from sklearn import datasets  # imported here: scikit-learn takes about a second to import

    digits = datasets.load_digits()
    x = torch.from_numpy(digits.images).to(torch.float32).div_(16).unsqueeze(1)
    y = torch.from_numpy(digits.target).to(torch.int64)
    classes = tuple(str(name) for name in digits.target_names)
    return split_dataset("digits", x, y, classes, seed=seed, source="sklearn.datasets.load_digits")


def digits_pool(shape: tuple[int, int, int], n: int, seed: int) -> tuple[Tensor, Tensor]:
    """`n` images made from scikit-learn's 8x8 digits for a model taking `shape` = (C, H, W) images: each
    a digit (all 1,797 in a seeded order, then again) upsampled (bilinear) to a seeded side between half
    and all of H, placed at a seeded position on a black canvas, repeated over the C channels. The same
    concept as MNIST-like data from another source, resolution and framing: a transfer pool for model
    extraction (an attacker's images of another distribution) and as many of them as a budget needs.

    Returns:
        Images (n, C, H, W) in [0, 1] and their digit labels (n,) 0..9.
    """
    from sklearn import datasets  # imported here: scikit-learn takes about a second to import

    c, h, w = shape
    digits = datasets.load_digits()
    x8 = torch.from_numpy(digits.images).to(torch.float32).div_(16).unsqueeze(1)  # (1797, 1, 8, 8)
    y8 = torch.from_numpy(digits.target).to(torch.int64)
    gen = make_generator(seed)
    m = x8.shape[0]
    order = torch.cat([torch.randperm(m, generator=gen) for _ in range(-(-n // m))])[:n]
    lo = max(1, min(h, w) // 2)
    sides = torch.randint(lo, min(h, w) + 1, (n,), generator=gen)
    u = torch.rand(n, 2, generator=gen)
    out = torch.zeros(n, 1, h, w)
    for side in sides.unique().tolist():
        sel = (sides == side).nonzero().squeeze(1)
        resized = F.interpolate(x8[order[sel]], size=(side, side), mode="bilinear", align_corners=False)
        tops = (u[sel, 0] * (h - side + 1)).long().clamp(max=h - side)
        lefts = (u[sel, 1] * (w - side + 1)).long().clamp(max=w - side)
        for j, t, left in zip(sel.tolist(), tops.tolist(), lefts.tolist(), strict=True):
            out[j, :, t : t + side, left : left + side] = resized[sel.tolist().index(j)]
    return out.clamp_(0, 1).expand(-1, c, -1, -1).contiguous(), y8[order]
