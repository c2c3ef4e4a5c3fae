"""`npz:PATH`: arrays in a NumPy `.npz` file, read with `allow_pickle=False`.

The file holds `x_train, y_train, x_test, y_test` (the split is the file's) or `x, y` (split 80/20 by
`stratified_split`). Images are uint8 0..255 or floats in [0, 1], laid out NCHW or NHWC (C = 1 or 3;
NCHW wins when both readings fit) or N×H×W for grayscale. Labels are integers 0..K-1; K is the
largest label plus one, and class names are the label numbers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bastion.core.errors import ConfigError, DataError
from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, fixed_split_dataset, from_uint8, split_dataset

__all__ = ["load_npz"]

_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_WHOLE_KEYS = ("x", "y")


def _images(x: np.ndarray, key: str, path: Path) -> Tensor:
    """Images as float32 (N, C, H, W) in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"npz: {path} {key} has shape {x.shape}; expected (N, C, H, W), (N, H, W, C) with C = 1 or 3, or (N, H, W)"
        )
    if len(x) == 0:
        raise DataError(f"npz: {path} {key} holds no images")
    if x.dtype == np.uint8:
        return from_uint8(x)
    lo, hi = x.min(), x.max()
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(
            f"npz: {path} {key} has dtype {x.dtype} with values in [{lo}, {hi}]; "
            "expected uint8 (0..255) or floats in [0, 1]"
        )
    if not (lo >= 0 and hi <= 1):  # also false for NaN
        raise DataError(
            f"npz: {path} {key} holds floats in [{float(lo):g}, {float(hi):g}]; expected [0, 1] (or uint8 0..255): "
            "divide by 255 or clip before saving"
        )
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> Tensor:
    """Labels as int64 (N,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"npz: {path} {key} has shape {y.shape}; expected ({n},), one label per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"npz: {path} {key} has dtype {y.dtype}; expected integer class labels")
    if y.min() < 0:
        raise DataError(f"npz: {path} {key} has negative labels (down to {y.min()}); expected 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def _classes(*labels: Tensor) -> tuple[str, ...]:
    return tuple(str(k) for k in range(max(int(y.max()) for y in labels) + 1))


@DATASETS.register("npz")
def load_npz(path: Path | None = None, seed: int = 0) -> Dataset:
    """Load images and labels from a `.npz` file.

    Args:
        path: The file.
        seed: Seed of the stratified 80/20 split of `x, y`; unused with `x_train, y_train, x_test, y_test`.

    Returns:
        The data set, named "npz".

    Raises:
        ConfigError: When no path is given.
        DataError: When the file cannot be read or its keys, shapes, dtypes or ranges are not as above.
    """
    if path is None:
        raise ConfigError("npz needs a file: use npz:PATH with arrays x_train, y_train, x_test, y_test (or x, y)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            wanted = _SPLIT_KEYS if keys >= set(_SPLIT_KEYS) else _WHOLE_KEYS
            if not keys >= set(wanted):
                raise DataError(
                    f"npz: {path} holds {', '.join(sorted(keys)) or 'no arrays'}; expected "
                    f"{', '.join(_SPLIT_KEYS)} or {', '.join(_WHOLE_KEYS)}"
                )
            arrays = {k: archive[k] for k in wanted}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"npz: cannot read {path} as a .npz file without pickles ({err})") from err
    if wanted == _WHOLE_KEYS:
        x = _images(arrays["x"], "x", path)
        y = _labels(arrays["y"], "y", len(x), path)
        return split_dataset("npz", x, y, _classes(y), seed=seed, source=str(path))
    x_train, x_test = _images(arrays["x_train"], "x_train", path), _images(arrays["x_test"], "x_test", path)
    y_train = _labels(arrays["y_train"], "y_train", len(x_train), path)
    y_test = _labels(arrays["y_test"], "y_test", len(x_test), path)
    return fixed_split_dataset("npz", x_train, y_train, x_test, y_test, _classes(y_train, y_test), source=str(path))
