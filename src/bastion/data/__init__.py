"""Data sets as tensors: images in [0, 1] (float32, NCHW), int64 labels, a recorded split.

`load_dataset("mnist5k")` gives the embedded default; `bastion list datasets` shows every name. A
data set is a loader function `(path, seed) -> Dataset` registered in `core.registry.DATASETS`;
adding one is a module in this package plus an import line below.
"""

from __future__ import annotations

from pathlib import Path

from bastion.core.errors import ConfigError
from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, SplitInfo, stratified_split
from bastion.data.cifar import default_data_dir, load_cifar, load_cifar10, load_cifar100
from bastion.data.digits import load_digits
from bastion.data.imagefolder import load_imagefolder
from bastion.data.mnist5k import load_mnist5k
from bastion.data.npz import load_npz

__all__ = [
    "Dataset",
    "SplitInfo",
    "default_data_dir",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_imagefolder",
    "load_mnist5k",
    "load_npz",
    "stratified_split",
]


def load_dataset(spec: str, *, root: str | Path | None = None, seed: int = 0) -> Dataset:
    """Load a registered data set by name, optionally followed by `:PATH`.

    Examples: `mnist5k`, `digits`, `cifar10`, `cifar10:/data/cifar`, `imagefolder:/path/to/folder`,
    `npz:/path/file.npz`.

    Args:
        spec: `NAME` or `NAME:PATH`.
        root: The path a loader gets when `spec` has none: the data folder for `cifar10` and
            `cifar100` (default `$BASTION_DATA`, else `~/.cache/bastion/data`). `mnist5k` and
            `digits` read no files and ignore it.
        seed: Seed of the split, for data sets that are split here.

    Returns:
        The data set, with its split recorded in `split`.

    Raises:
        UnknownNameError: When NAME is not registered (with the closest spelling).
        ConfigError: When `spec` is empty or the loader needs a path and has none.
        DataError: When the data cannot be found, read or verified.
    """
    name, sep, arg = spec.partition(":")
    if not name or (sep and not arg):
        raise ConfigError(f"data set spec {spec!r} is malformed; use NAME or NAME:PATH, e.g. mnist5k or npz:data.npz")
    loader = DATASETS.get(name)
    if arg:
        path: Path | None = Path(arg).expanduser()
    else:
        path = Path(root).expanduser() if root is not None else None
    dataset = loader(path, seed)
    if not isinstance(dataset, Dataset):
        raise TypeError(f"loader of data set {name!r} returned {type(dataset).__name__}, not a Dataset")
    return dataset
