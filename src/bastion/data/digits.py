"""`digits`: scikit-learn's 1,797 handwritten digits, 8x8 pixels with values 0..16."""

from __future__ import annotations

from pathlib import Path

import torch

from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, split_dataset

__all__ = ["load_digits"]


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
