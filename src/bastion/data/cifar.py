"""`cifar10` and `cifar100` from the official python-version archives, verified and read without `pickle.load`.

The archives (https://www.cs.toronto.edu/~kriz/cifar.html) are looked for in a data folder: the
`cifar10:FOLDER` path, else `load_dataset`'s `root`, else `$BASTION_DATA`, else `~/.cache/bastion/data`.
A missing archive is downloaded from the official URL (to a temporary file, verified, then renamed);
where that fails the error names the file, the folder and how to provide it. Every archive is checked
against its SHA-256 before anything in it is read, and its members are read straight from the tar.

Expected SHA-256, as published by two independent loaders of the same official files: pytorch/vision
(`torchvision/prototype/datasets/_builtin/cifar.py`, `_SHA256`) and TensorFlow/Keras
(`keras/datasets/cifar10.py` and `cifar100.py`, `file_hash`). They match the MD5 sums on the
dataset's own page (c58f30108f718f92721af3b95e74349a, eb9058c3a382ffc7106e4002c42a8d85), which
torchvision also checks.

Why reading the batches is safe: the batch files are Python 2 pickles, and `pickle.load` would call
any callable a file names. `_BatchUnpickler` is the standard restricted unpickler: every global a
pickle names (GLOBAL, STACK_GLOBAL, INST, OBJ and the copyreg extension codes alike) is resolved by
`find_class`, which returns only the three numpy objects that rebuild an array (`_reconstruct`,
`ndarray`, `dtype`) and refuses anything else; persistent ids are refused by the base class. With no
other callable reachable, a pickle can build dicts, lists, strings, numbers and numpy arrays, and
nothing more. What it builds is then checked (uint8 data of 3072 columns, integer labels).
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import torch

from bastion._atomic import sha256_file
from bastion.core.errors import DataError
from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, fixed_split_dataset, from_uint8

__all__ = ["default_data_dir", "load_cifar", "load_cifar10", "load_cifar100"]

logger = logging.getLogger(__name__)

_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
_TIMEOUT_S = 15.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Archive:
    """Where one CIFAR archive lives and what it holds."""

    file: str
    sha256: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


_ARCHIVES = {
    "cifar10": _Archive(
        file="cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        train=tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
        test=("cifar-10-batches-py/test_batch",),
        meta="cifar-10-batches-py/batches.meta",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": _Archive(
        file="cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        train=("cifar-100-python/train",),
        test=("cifar-100-python/test",),
        meta="cifar-100-python/meta",
        label_key="fine_labels",
        names_key="fine_label_names",
    ),
}

# An array pickles as `_reconstruct(ndarray, (0,), b"b")` plus a state; asking numpy for its own
# reconstructor avoids importing a private module whose name changed in numpy 2 (core -> _core).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable callables are the numpy array reconstructors (see module doc)."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch") from None


def default_data_dir() -> Path:
    """The data folder: `$BASTION_DATA` when set, else `~/.cache/bastion/data`."""
    env = os.environ.get("BASTION_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bastion" / "data"


def _download(url: str, dest: Path, expected: str, name: str) -> None:
    """Fetch `url` to a temporary file beside `dest`, verify it, rename it; OSError when it cannot be fetched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        logger.info("%s: downloading %s to %s", name, url, dest)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
        found = sha256_file(tmp)
        if found != expected:
            raise DataError(
                f"{name}: the download from {url} has SHA-256 {found}, expected {expected}; it was corrupted "
                "or is not the official archive and has been removed. Try again, or copy the archive by hand"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _read_members(archive: Path, wanted: set[str], name: str) -> dict[str, bytes]:
    """The bytes of the `wanted` regular files of a tar.gz, refusing unsafe member names."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts:
                    raise DataError(f"{name}: {archive} holds an unsafe member name {member.name!r}; refusing it")
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        found[member.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{name}: cannot read {archive} as a tar.gz archive ({err})") from err
    missing = sorted(wanted - found.keys())
    if missing:
        raise DataError(f"{name}: {archive} lacks {', '.join(missing)}; is it the python-version archive?")
    return found


def _unpickle(content: bytes, member: str, name: str) -> dict[str, object]:
    """A batch or meta file as a dict with str keys, through `_BatchUnpickler` only."""
    try:
        obj = _BatchUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as err:  # any failure of untrusted bytes, whatever its type, is a bad file
        raise DataError(f"{name}: refusing to read {member} ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{name}: {member} holds a {type(obj).__name__}, expected a dict")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _field(batch: dict[str, object], key: str, member: str, name: str) -> object:
    if key not in batch:
        raise DataError(f"{name}: {member} has no {key!r} entry (found {', '.join(sorted(batch))})")
    return batch[key]


def _images_labels(content: bytes, member: str, spec: _Archive, name: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) of one batch file."""
    batch = _unpickle(content, member, name)
    data = _field(batch, "data", member, name)
    labels = _field(batch, spec.label_key, member, name)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{name}: {member} data must be uint8 rows of 3072 values, found {found}")
    if not isinstance(labels, list | np.ndarray) or not all(isinstance(v, int | np.integer) for v in labels):
        raise DataError(f"{name}: {member} {spec.label_key} must be a list of integers")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(data):
        raise DataError(f"{name}: {member} has {len(data)} images but {len(y)} labels")
    # each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major
    return data.reshape(-1, 3, 32, 32), y


def _class_names(content: bytes, member: str, spec: _Archive, name: str) -> tuple[str, ...]:
    names = _field(_unpickle(content, member, name), spec.names_key, member, name)
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{name}: {member} {spec.names_key} must be a list of strings")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)


def _locate(name: str, spec: _Archive, path: Path | None, expected: str) -> Path:
    """The verified archive: `path` itself when it is a file, else `spec.file` in the folder, fetched if absent."""
    location = path if path is not None else default_data_dir()
    archive = location if location.is_file() or location.name.endswith(".tar.gz") else location / spec.file
    if not archive.exists():
        url = _BASE_URL + spec.file
        try:
            _download(url, archive, expected, name)
        except (OSError, http.client.HTTPException) as err:
            raise DataError(
                f"{name}: {archive} not found and could not be downloaded ({err}); download {url} "
                f"on a machine with network and copy it into {archive.parent}, or pass --data {name}:FOLDER"
            ) from err
        return archive
    found = sha256_file(archive)
    if found != expected:
        raise DataError(
            f"{name}: {archive} has SHA-256 {found}, expected {expected}; the file is corrupted or not the "
            f"official archive. Delete it and download {_BASE_URL + spec.file} again"
        )
    return archive


def load_cifar(name: Literal["cifar10", "cifar100"], path: Path | None = None, *, sha256: str | None = None) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 (fine labels) with the official 50,000 / 10,000 split.

    Args:
        name: Which data set.
        path: The folder holding the archive, or the archive file itself; None for `default_data_dir()`.
        sha256: The archive's expected SHA-256 instead of the official one (for tests that build
            tiny archives in the real format).

    Returns:
        Images (N, 3, 32, 32) in [0, 1], labels and the class names of the archive's meta file.

    Raises:
        DataError: When the archive is missing and cannot be downloaded, fails its checksum, or holds
            anything but the expected batches.
    """
    spec = _ARCHIVES[name]
    expected = (sha256 or spec.sha256).lower()
    archive = _locate(name, spec, path, expected)
    members = _read_members(archive, {*spec.train, *spec.test, spec.meta}, name)
    train = [_images_labels(members[m], m, spec, name) for m in spec.train]
    test = [_images_labels(members[m], m, spec, name) for m in spec.test]
    classes = _class_names(members[spec.meta], spec.meta, spec, name)
    x_train, x_test = (from_uint8(np.concatenate([x for x, _ in part])) for part in (train, test))
    y_train, y_test = (torch.from_numpy(np.concatenate([y for _, y in part])) for part in (train, test))
    return fixed_split_dataset(name, x_train, y_train, x_test, y_test, classes, source=str(archive))


@DATASETS.register("cifar10")
def load_cifar10(path: Path | None = None, seed: int = 0) -> Dataset:
    """CIFAR-10 from `cifar-10-python.tar.gz` in `path` (see `load_cifar`); `seed` is unused: the split is official."""
    return load_cifar("cifar10", path)


@DATASETS.register("cifar100")
def load_cifar100(path: Path | None = None, seed: int = 0) -> Dataset:
    """CIFAR-100 (fine labels) from `cifar-100-python.tar.gz` in `path` (see `load_cifar`); `seed` is unused."""
    return load_cifar("cifar100", path)
