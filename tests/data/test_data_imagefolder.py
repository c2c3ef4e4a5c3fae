"""imagefolder: PATH/<class>/<images>, with or without train/ and test/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bastion.core.errors import DataError
from bastion.data import load_dataset


def _save(path: Path, value: int, mode: str = "RGB", size: tuple[int, int] = (6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    pixels = np.full((size[1], size[0], channels), value, dtype=np.uint8).squeeze(-1 if mode == "L" else ())
    Image.fromarray(pixels, mode=mode).save(path)


def _folder(root: Path, counts: dict[str, int], mode: str = "RGB") -> None:
    for label, (name, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            _save(root / name / f"{i}.png", 100 * label + i, mode)


def test_seeded_split_without_subfolders(tmp_path: Path) -> None:
    _folder(tmp_path, {"cat": 5, "dog": 10})
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    _save(tmp_path / "dog" / "nested" / "EXTRA.PNG", 0)  # nested folders and upper-case suffixes count
    data = load_dataset(f"imagefolder:{tmp_path}", seed=1)
    assert data.classes == ("cat", "dog") and data.input_shape == (3, 5, 6)
    assert torch.bincount(data.y_test).tolist() == [1, 2] and torch.bincount(data.y_train).tolist() == [4, 9]
    assert data.split.seed == 1 and data.split.source == str(tmp_path)
    index = data.split.train_index
    assert index is not None
    # index into the sorted (class, file) list: cat/0..4, then dog/0..9 and dog/nested/EXTRA.PNG
    values = torch.tensor([100 * (i >= 5) + (i if i < 5 else i - 5) for i in range(15)] + [0]) / 255
    assert torch.allclose(data.x_train[:, 0, 0, 0], values[index])
    assert torch.equal(load_dataset(f"imagefolder:{tmp_path}", seed=1).split.test_index, data.split.test_index)


def test_train_and_test_subfolders_are_the_split(tmp_path: Path) -> None:
    _folder(tmp_path / "train", {"a": 3, "b": 2})
    _folder(tmp_path / "test", {"a": 1, "b": 1})
    data = load_dataset("imagefolder", root=tmp_path)
    assert len(data.x_train) == 5 and len(data.x_test) == 2
    assert data.y_test.tolist() == [0, 1] and data.split.seed is None and data.split.test_index is None


def test_test_classes_must_match(tmp_path: Path) -> None:
    _folder(tmp_path / "train", {"a": 3, "b": 2})
    _folder(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(DataError, match=r"has classes \['a', 'b'\] but .*test has \['a', 'c'\]"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_grayscale_when_every_image_is(tmp_path: Path) -> None:
    _folder(tmp_path, {"x": 5, "y": 5}, mode="L")
    assert load_dataset(f"imagefolder:{tmp_path}").input_shape == (1, 5, 6)
    _save(tmp_path / "y" / "color.png", 7, mode="RGB")
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.input_shape == (3, 5, 6)
    assert torch.equal(data.x_train[:, 0], data.x_train[:, 2])  # gray images become equal RGB planes


def test_mixed_sizes_name_the_first_odd_file(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 3, "b": 3})
    _save(tmp_path / "b" / "big.png", 0, size=(8, 8))
    with pytest.raises(DataError, match=r"b/big.png is 8x8 but .*a/0.png is 6x5; all images must have the same size"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(DataError, match="has no class folders"):
        load_dataset(f"imagefolder:{tmp_path}")
    _folder(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("")
    with pytest.raises(DataError, match=r"class folder .*/b holds no images"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_unreadable_image(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": 2})
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.jpg"):
        load_dataset(f"imagefolder:{tmp_path}")
