"""The `Dataset` record every loader returns, and the helpers the loaders share.

A data set is four tensors (images in [0, 1], NCHW, float32; labels int64) plus what a model and a
report need to know about them: class names, the per-channel statistics of the training split (for
the model's normalisation layer) and how the split was made (`SplitInfo`), so a result can name
exactly which samples it was measured on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bastion.core.errors import DataError

__all__ = [
    "Dataset",
    "SplitInfo",
    "channel_stats",
    "fixed_split_dataset",
    "from_uint8",
    "split_dataset",
    "stratified_split",
]


def _index_digest(index: Tensor | None) -> str | None:
    """SHA-256 of the indices as little-endian int64 bytes, or None when there is no index."""
    if index is None:
        return None
    return hashlib.sha256(index.numpy().astype("<i8").tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: equality is identity
class SplitInfo:
    """How a data set was split into training and test samples.

    Attributes:
        seed: The seed of the split; None when the source fixes the split (CIFAR's official one).
        n_train: Number of training samples.
        n_test: Number of test samples.
        train_index: int64 indices into the source's original ordering of the training samples, in
            the order they appear in `x_train`; None when the source fixes the split.
        test_index: The same for the test samples.
        source: Where the data came from: a file or folder path, or a package.
    """

    seed: int | None
    n_train: int
    n_test: int
    train_index: Tensor | None
    test_index: Tensor | None
    source: str

    def to_dict(self) -> dict[str, str | int | None]:
        """Plain JSON types; each index list is replaced by the SHA-256 of its int64 little-endian bytes."""
        return {
            "seed": self.seed,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "train_index_sha256": _index_digest(self.train_index),
            "test_index_sha256": _index_digest(self.test_index),
            "source": self.source,
        }


@dataclass(frozen=True, eq=False)  # tensors have no single truth value: equality is identity
class Dataset:
    """Training and test images in [0, 1] (float32, NCHW) with int64 labels in [0, num_classes).

    Attributes:
        name: The registered name the data set was loaded under.
        x_train: Training images, (N, C, H, W).
        y_train: Training labels, (N,).
        x_test: Test images, (M, C, H, W).
        y_test: Test labels, (M,).
        num_classes: Number of classes.
        classes: One name per class, in label order.
        mean: Per-channel mean of `x_train`.
        std: Per-channel standard deviation of `x_train`.
        split: How the split was made.

    Raises:
        DataError: When shapes, dtypes, ranges or labels do not agree; the message names the data set.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split: SplitInfo

    def __post_init__(self) -> None:
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            self._check_part(part, x, y)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            train_shape, test_shape = tuple(self.x_train.shape[1:]), tuple(self.x_test.shape[1:])
            self._fail(f"x_train images are {train_shape} but x_test images are {test_shape}")
        if len(self.classes) != self.num_classes:
            self._fail(f"{self.num_classes} classes but {len(self.classes)} class names")
        channels = self.x_train.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            self._fail(f"mean and std need one value per channel ({channels}), got {self.mean} and {self.std}")
        if (self.split.n_train, self.split.n_test) != (len(self.x_train), len(self.x_test)):
            self._fail(
                f"split records {self.split.n_train}/{self.split.n_test} samples "
                f"but the tensors hold {len(self.x_train)}/{len(self.x_test)}"
            )

    def _fail(self, message: str) -> None:
        raise DataError(f"data set {self.name!r}: {message}")

    def _check_part(self, part: str, x: Tensor, y: Tensor) -> None:
        if x.dtype != torch.float32 or x.dim() != 4:
            self._fail(f"x_{part} must be float32 (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
            self._fail(f"y_{part} must be int64 of shape ({len(x)},), got {y.dtype} of shape {tuple(y.shape)}")
        if len(x) == 0:
            self._fail(f"the {part} split is empty")
        lo, hi = torch.aminmax(x)
        if not (lo >= 0 and hi <= 1):  # also false for NaN
            self._fail(f"x_{part} must lie in [0, 1], found values in [{lo.item():g}, {hi.item():g}]")
        y_lo, y_hi = torch.aminmax(y)
        if y_lo < 0 or y_hi >= self.num_classes:
            self._fail(f"y_{part} must lie in [0, {self.num_classes - 1}], found [{y_lo.item()}, {y_hi.item()}]")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return (c, h, w)


def from_uint8(images: np.ndarray) -> Tensor:
    """uint8 images (any shape) as a float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255)


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of a batch (N, C, H, W)."""
    std, mean = torch.std_mean(x, dim=(0, 2, 3), correction=0)
    return tuple(mean.tolist()), tuple(std.tolist())


def stratified_split(y: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded stratified split of sample indices into training and test.

    Each class gives `round(test_fraction * n)` of its `n` samples to the test split (at least one, and
    at least one stays in training, when the class has two or more samples). Both index lists are then
    shuffled, so a prefix of either is a random mix of classes. All draws come from one
    `torch.Generator` seeded with `seed`: the same seed and labels give the same split.

    Args:
        y: Labels of the source, (N,) int64.
        test_fraction: Share of each class that goes to the test split, in (0, 1).
        seed: Seed of the generator.

    Returns:
        `(train_index, test_index)`, int64 indices into `y`.
    """
    gen = torch.Generator().manual_seed(seed)
    train_parts, test_parts = [], []
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = round(test_fraction * len(members))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test_parts.append(members[:n_test])
        train_parts.append(members[n_test:])
    train, test = torch.cat(train_parts), torch.cat(test_parts)
    train = train[torch.randperm(len(train), generator=gen)]
    test = test[torch.randperm(len(test), generator=gen)]
    return train, test


def split_dataset(
    name: str,
    x: Tensor,
    y: Tensor,
    classes: tuple[str, ...],
    *,
    seed: int,
    source: str,
    test_fraction: float = 0.2,
) -> Dataset:
    """A `Dataset` from all samples of a source, split by `stratified_split` and recorded."""
    train_index, test_index = stratified_split(y, test_fraction, seed)
    x_train = x[train_index]
    mean, std = channel_stats(x_train)
    split = SplitInfo(seed, len(train_index), len(test_index), train_index, test_index, source)
    return Dataset(name, x_train, y[train_index], x[test_index], y[test_index], len(classes), classes, mean, std, split)


def fixed_split_dataset(
    name: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    classes: tuple[str, ...],
    *,
    source: str,
) -> Dataset:
    """A `Dataset` whose split is fixed by its source (no seed, no index lists)."""
    mean, std = channel_stats(x_train)
    split = SplitInfo(None, len(x_train), len(x_test), None, None, source)
    return Dataset(name, x_train, y_train, x_test, y_test, len(classes), classes, mean, std, split)
