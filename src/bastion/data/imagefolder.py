"""`imagefolder:PATH`: images sorted into one folder per class, `PATH/<class>/<image files>`.

Classes are the sub-folder names in sorted order. When PATH holds `train/` and `test/`, each with the
same class folders, they are the split; otherwise all images are split 80/20 by `stratified_split`,
with indices into the sorted list of (class, file) pairs. Images of a folder may sit in nested
folders; hidden files and folders are skipped. Every image must have the same size; they are
read as grayscale when all of them are grayscale, else as RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bastion.core.errors import ConfigError, DataError
from bastion.core.registry import DATASETS
from bastion.data._dataset import Dataset, fixed_split_dataset, from_uint8, split_dataset

__all__ = ["IMAGE_SUFFIXES", "load_imagefolder"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
_GRAYSCALE_MODES = frozenset({"1", "L", "LA"})


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _scan(folder: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """Class names, image files and their labels, in sorted (class, file) order."""
    if not folder.is_dir():
        raise DataError(f"imagefolder: {folder} is not a folder; give imagefolder:PATH with PATH/<class>/<images>")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(f"imagefolder: {folder} has no class folders; expected {folder}/<class>/<image files>")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and _visible(p, class_dir)
        )
        if not images:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(f"imagefolder: class folder {class_dir} holds no images ({suffixes})")
        files += images
        labels += [label] * len(images)
    return tuple(d.name for d in class_dirs), files, labels


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (width, height) of an image, read from its header."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"imagefolder: cannot read image {path} ({err})") from err


def _read_images(files: list[Path]) -> np.ndarray:
    """uint8 images (N, H, W, C), grayscale when every image is, else RGB; all must share one size."""
    headers = [_header(f) for f in files]
    size = headers[0][1]
    for path, (_, other) in zip(files, headers, strict=True):
        if other != size:
            raise DataError(
                f"imagefolder: {path} is {other[0]}x{other[1]} but {files[0]} is {size[0]}x{size[1]}; "
                "all images must have the same size"
            )
    mode, channels = ("L", 1) if all(m in _GRAYSCALE_MODES for m, _ in headers) else ("RGB", 3)
    out = np.empty((len(files), size[1], size[0], channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as img:
                out[i] = np.asarray(img.convert(mode)).reshape(size[1], size[0], channels)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"imagefolder: cannot read image {path} ({err})") from err
    return out


@DATASETS.register("imagefolder")
def load_imagefolder(path: Path | None = None, seed: int = 0) -> Dataset:
    """Load images from `PATH/<class>/*` (or `PATH/train/<class>/*` and `PATH/test/<class>/*`).

    Args:
        path: The folder.
        seed: Seed of the stratified 80/20 split; unused when the folder has `train/` and `test/`.

    Returns:
        Images (N, C, H, W) in [0, 1] with C = 1 when every image is grayscale, else 3.

    Raises:
        ConfigError: When no path is given.
        DataError: When the folder, a class folder or the images are missing, unreadable or of
            different sizes.
    """
    if path is None:
        raise ConfigError("imagefolder needs a folder: use imagefolder:PATH with PATH/<class>/<image files>")
    fixed = (path / "train").is_dir() and (path / "test").is_dir()
    if fixed:
        classes, train_files, train_labels = _scan(path / "train")
        test_classes, test_files, test_labels = _scan(path / "test")
        if test_classes != classes:
            raise DataError(
                f"imagefolder: {path}/train has classes {list(classes)} but {path}/test has {list(test_classes)}; "
                "give both the same class folders"
            )
        files, labels = train_files + test_files, train_labels + test_labels
    else:
        classes, files, labels = _scan(path)
    x = from_uint8(_read_images(files).transpose(0, 3, 1, 2))
    y = torch.tensor(labels, dtype=torch.int64)
    if not fixed:
        return split_dataset("imagefolder", x, y, classes, seed=seed, source=str(path))
    n = len(train_files)
    return fixed_split_dataset("imagefolder", x[:n], y[:n], x[n:], y[n:], classes, source=str(path))
