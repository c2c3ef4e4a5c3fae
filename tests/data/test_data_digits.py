"""digits: scikit-learn's 8x8 digits with a seeded stratified 80/20 split."""

from __future__ import annotations

import torch

from bastion.data import load_dataset


def test_digits_shape_range_split() -> None:
    data = load_dataset("digits", seed=3)
    assert data.x_train.shape[1:] == (1, 8, 8)
    assert len(data.x_train) + len(data.x_test) == 1797
    assert abs(len(data.x_test) - 0.2 * 1797) <= 10
    assert data.x_train.max() == 1 and data.x_train.min() == 0
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # 20% of 174..183 per class
    assert load_dataset("digits", seed=3).split.to_dict() == data.split.to_dict()
