"""cifar10 / cifar100: tiny archives in the official format, checksums, refusal of unsafe pickles, offline errors.

The official batch files were written by Python 2's cPickle (protocol 2): str keys and strings are
Python 2 str (SHORT_BINSTRING / BINSTRING, read back as bytes), labels are lists of ints and `data` is
a uint8 numpy array pickled as `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')` plus a
version-1 state holding `numpy.dtype('u1')` and the raw bytes. Python 3's pickler cannot write that
(it encodes bytes through `_codecs.encode`), so `_py2_pickle` writes those opcodes by hand.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.core.errors import DataError
from bastion.data import load_cifar, load_dataset

Py2 = dict[bytes, object] | list[object] | bytes | int | np.ndarray


def _emit(obj: Py2, out: bytearray) -> None:
    if isinstance(obj, dict):
        out += b"}("  # EMPTY_DICT MARK
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)  # type: ignore[arg-type]
        out += b"u"  # SETITEMS
    elif isinstance(obj, list):
        out += b"]("  # EMPTY_LIST MARK
        for value in obj:
            _emit(value, out)  # type: ignore[arg-type]
        out += b"e"  # APPENDS
    elif isinstance(obj, bytes):  # a Python 2 str
        out += (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))) + obj
    elif isinstance(obj, int):
        out += b"K" + bytes([obj]) if 0 <= obj < 256 else b"M" + struct.pack("<H", obj)
    else:  # a uint8 array, as numpy under Python 2 pickled it
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R("  # ..., MARK
        out += b"K\x01("  # state version 1, MARK for the shape
        for dim in obj.shape:
            _emit(dim, out)
        out += b"t"  # TUPLE
        out += b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        out += b"\x89"  # NEWFALSE: C order
        _emit(obj.tobytes(), out)
        out += b"tb"  # TUPLE BUILD


def _py2_pickle(obj: Py2) -> bytes:
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _batch(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, num_classes, n)]


def _cifar10_members(pickled: dict[str, bytes] | None = None) -> dict[str, bytes]:
    members = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = _batch(3 if name.startswith("data") else 4, 10, seed=i)
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data}
        batch[b"filenames"] = [f"img_{i}_{j}.png".encode() for j in range(len(labels))]
        members[f"cifar-10-batches-py/{name}"] = _py2_pickle(batch)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": 3, b"label_names": names, b"num_vis": 3072}
    members["cifar-10-batches-py/batches.meta"] = _py2_pickle(meta)  # type: ignore[arg-type]
    members.update(pickled or {})
    return members


def _write(folder: Path, file: str, members: dict[str, bytes]) -> str:
    """Write the archive; return its SHA-256."""
    content = _tar_gz(members)
    (folder / file).write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def test_cifar10_reads_the_official_layout(tmp_path: Path) -> None:
    digest = _write(tmp_path, "cifar-10-python.tar.gz", _cifar10_members())
    data = load_cifar("cifar10", tmp_path, sha256=digest)
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.classes[0] == "airplane" and data.num_classes == 10
    raw, labels = _batch(3, 10, seed=0)  # data_batch_1 comes first
    assert torch.equal(data.x_train[0, 1], torch.from_numpy(raw[0, 1024:2048].reshape(32, 32)).float() / 255)
    assert data.y_train[:3].tolist() == labels
    assert data.split.seed is None and data.split.train_index is None and data.split.n_train == 15
    assert data.split.source == str(tmp_path / "cifar-10-python.tar.gz")


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    members = {}
    for part, n in (("train", 6), ("test", 5)):
        data, fine = _batch(n, 100, seed=n)
        batch = {b"filenames": [b"x.png"] * n, b"batch_label": part.encode(), b"fine_labels": fine}
        batch |= {b"coarse_labels": [v // 5 for v in fine], b"data": data}
        members[f"cifar-100-python/{part}"] = _py2_pickle(batch)  # type: ignore[arg-type]
    meta = {b"fine_label_names": [f"f{k}".encode() for k in range(100)], b"coarse_label_names": [b"c"] * 20}
    members["cifar-100-python/meta"] = _py2_pickle(meta)  # type: ignore[arg-type]
    digest = _write(tmp_path, "cifar-100-python.tar.gz", members)
    data = load_cifar("cifar100", tmp_path / "cifar-100-python.tar.gz", sha256=digest)
    assert data.num_classes == 100 and data.classes[99] == "f99"
    assert data.y_test.tolist() == _batch(5, 100, seed=5)[1]
    assert data.x_train.shape == (6, 3, 32, 32)


def test_official_checksum_is_the_default(tmp_path: Path) -> None:
    _write(tmp_path, "cifar-10-python.tar.gz", _cifar10_members())
    with pytest.raises(DataError, match="expected 6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"):
        load_dataset("cifar10", root=tmp_path)


def test_corrupted_archive_fails_its_checksum(tmp_path: Path) -> None:
    digest = _write(tmp_path, "cifar-10-python.tar.gz", _cifar10_members())
    archive = tmp_path / "cifar-10-python.tar.gz"
    content = bytearray(archive.read_bytes())
    content[len(content) // 2] ^= 0xFF
    archive.write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"has SHA-256 [0-9a-f]{64}, expected .* corrupted or not the official"):
        load_cifar("cifar10", tmp_path, sha256=digest)


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_and_not_run(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"data": _System(f"touch {marker}"), "labels": []}, protocol=protocol)
    digest = _write(tmp_path, "cifar-10-python.tar.gz", _cifar10_members({"cifar-10-batches-py/data_batch_3": evil}))
    with pytest.raises(
        DataError, match=rf"refusing to read cifar-10-batches-py/data_batch_3 .*{os.name}\.system is not allowed"
    ):
        load_cifar("cifar10", tmp_path, sha256=digest)
    assert not marker.exists()


def test_unexpected_content_is_refused(tmp_path: Path) -> None:
    bad = _py2_pickle({b"data": [1, 2, 3], b"labels": [0]})
    digest = _write(tmp_path, "cifar-10-python.tar.gz", _cifar10_members({"cifar-10-batches-py/test_batch": bad}))
    with pytest.raises(DataError, match="test_batch data must be uint8 rows of 3072 values, found list"):
        load_cifar("cifar10", tmp_path, sha256=digest)


@pytest.mark.parametrize("member", ["../evil", "/etc/evil"])
def test_unsafe_member_names_are_refused(tmp_path: Path, member: str) -> None:
    digest = _write(tmp_path, "cifar-10-python.tar.gz", _cifar10_members({member: b"x"}))
    with pytest.raises(DataError, match="unsafe member name"):
        load_cifar("cifar10", tmp_path, sha256=digest)


def test_missing_members_are_named(tmp_path: Path) -> None:
    members = _cifar10_members()
    del members["cifar-10-batches-py/data_batch_5"]
    digest = _write(tmp_path, "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_5"):
        load_cifar("cifar10", tmp_path, sha256=digest)


def _offline(url: str, timeout: float) -> None:
    raise urllib.error.URLError("network is unreachable (test)")


def test_missing_archive_offline_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    monkeypatch.setenv("BASTION_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as info:
        load_dataset("cifar100")
    message = str(info.value)
    assert f"{tmp_path / 'data' / 'cifar-100-python.tar.gz'} not found and could not be downloaded" in message
    assert "network is unreachable (test)" in message and "--data cifar100:FOLDER" in message
    assert list((tmp_path / "data").iterdir()) == []  # no partial download left behind


def test_download_is_verified_then_renamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    content = _tar_gz(_cifar10_members())
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(content))
    data = load_cifar("cifar10", tmp_path, sha256=hashlib.sha256(content).hexdigest())
    assert len(data.x_test) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["cifar-10-python.tar.gz"]


def test_bad_download_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>captive portal</html>"))
    with pytest.raises(DataError, match=r"download from https://www\.cs\.toronto\.edu/\S+ has SHA-256"):
        load_dataset("cifar10", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
