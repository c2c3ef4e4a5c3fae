"""The Dataset record: validation, split record and the shared split helper."""

from __future__ import annotations

import json

import pytest
import torch

from bastion.core.errors import DataError
from bastion.data import Dataset, SplitInfo, stratified_split


def _make(**changes: object) -> Dataset:
    fields: dict[str, object] = {
        "name": "toy",
        "x_train": torch.rand(6, 3, 4, 4),
        "y_train": torch.tensor([0, 1, 2, 0, 1, 2]),
        "x_test": torch.rand(3, 3, 4, 4),
        "y_test": torch.tensor([0, 1, 2]),
        "num_classes": 3,
        "classes": ("a", "b", "c"),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.3, 0.3, 0.3),
        "split": SplitInfo(0, 6, 3, torch.arange(6), torch.arange(6, 9), "memory"),
    }
    fields.update(changes)
    return Dataset(**fields)  # type: ignore[arg-type]


def test_valid_dataset_and_json_record() -> None:
    data = _make()
    assert data.input_shape == (3, 4, 4)
    record = data.split.to_dict()
    assert json.loads(json.dumps(record)) == record
    assert len(str(record["train_index_sha256"])) == 64 and "train_index" not in record
    fixed = SplitInfo(None, 6, 3, None, None, "archive").to_dict()
    assert fixed["train_index_sha256"] is None and fixed["seed"] is None


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"x_train": torch.rand(6, 3, 4, 4) * 2}, r"x_train must lie in \[0, 1\]"),
        ({"x_test": torch.full((3, 3, 4, 4), float("nan"))}, r"x_test must lie in \[0, 1\]"),
        ({"x_train": torch.rand(6, 3, 4, 4, dtype=torch.float64)}, "x_train must be float32"),
        ({"x_train": torch.rand(6, 48)}, r"x_train must be float32 \(N, C, H, W\)"),
        ({"y_train": torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int32)}, "y_train must be int64"),
        ({"y_test": torch.tensor([0, 1])}, "y_test must be int64 of shape"),
        ({"y_test": torch.tensor([0, 1, 3])}, r"y_test must lie in \[0, 2\]"),
        ({"x_test": torch.rand(3, 3, 5, 5)}, "x_test images are"),
        ({"classes": ("a", "b")}, "3 classes but 2 class names"),
        ({"mean": (0.5,)}, "one value per channel"),
        ({"split": SplitInfo(0, 5, 3, None, None, "memory")}, "split records 5/3"),
    ],
)
def test_invalid_dataset_names_itself(changes: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        _make(**changes)
    assert "data set 'toy'" in str(info.value)


def test_stratified_split_small_classes() -> None:
    y = torch.tensor([0] * 10 + [1] * 2 + [2])
    train, test = stratified_split(y, 0.2, seed=0)
    assert sorted(train.tolist() + test.tolist()) == list(range(13))
    assert torch.bincount(y[test], minlength=3).tolist() == [2, 1, 0]  # a lone sample stays in training
    assert train.dtype == torch.int64
    assert torch.equal(stratified_split(y, 0.2, seed=0)[1], test)
