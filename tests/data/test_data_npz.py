"""npz: arrays x_train/y_train/x_test/y_test or x/y, any common layout, no pickles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.core.errors import DataError
from bastion.data import load_dataset


def test_split_keys_nhwc_uint8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (8, 5, 4, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (4, 5, 4, 3), dtype=np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(8) % 3, x_test=x_test, y_test=np.array([[0], [1], [2], [0]]))
    data = load_dataset(f"npz:{path}")
    assert data.input_shape == (3, 5, 4) and data.num_classes == 3 and data.classes == ("0", "1", "2")
    assert torch.equal(data.x_train[2, 1], torch.from_numpy(x_train[2, :, :, 1]).float() / 255)
    assert data.y_test.tolist() == [0, 1, 2, 0] and data.split.seed is None


def test_whole_float_nchw_is_split_by_seed(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((50, 1, 6, 6)).astype(np.float32)
    y = np.repeat(np.arange(5), 10)
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=x, y=y)
    data = load_dataset(f"npz:{path}", seed=2)
    assert data.x_train.shape == (40, 1, 6, 6) and torch.bincount(data.y_test).tolist() == [2] * 5
    test_index = data.split.test_index
    assert test_index is not None
    assert torch.equal(data.x_test, torch.from_numpy(x)[test_index])


def test_grayscale_nhw(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 7, 7), dtype=np.float64), y=np.arange(10) % 2)
    assert load_dataset(f"npz:{path}").input_shape == (1, 7, 7)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.zeros((4, 1, 2, 2)), "targets": np.zeros(4)}, r"holds images, targets; expected x_train, "),
        ({"x": np.full((4, 1, 2, 2), 3.5), "y": np.zeros(4, int)}, r"holds floats in \[3.5, 3.5\]; expected \[0, 1\]"),
        ({"x": np.full((4, 1, 2, 2), 300), "y": np.zeros(4, int)}, r"dtype int64 with values in \[300, 300\]"),
        ({"x": np.zeros((4, 5, 2, 2)), "y": np.zeros(4, int)}, r"x has shape \(4, 5, 2, 2\)"),
        ({"x": np.zeros((4, 1, 2, 2)), "y": np.zeros(3, int)}, r"y has shape \(3,\); expected \(4,\)"),
        ({"x": np.zeros((4, 1, 2, 2)), "y": np.zeros(4)}, "y has dtype float64; expected integer class labels"),
        ({"x": np.zeros((4, 1, 2, 2)), "y": np.array([0, 1, -1, 0])}, "negative labels"),
        ({"x": np.zeros((0, 1, 2, 2)), "y": np.zeros(0, int)}, "x holds no images"),
        ({"x": np.array([None] * 4), "y": np.zeros(4, int)}, "without pickles"),
    ],
)
def test_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=match):
        load_dataset(f"npz:{path}")


def test_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .*missing.npz"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match=r"cannot read .*text.npz"):
        load_dataset(f"npz:{tmp_path / 'text.npz'}")
