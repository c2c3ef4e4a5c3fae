"""Atomic writes: a finished file appears whole, with the permissions a plain write would give it; a
failed one leaves nothing behind."""

import os
import stat
from pathlib import Path

import pytest

from bastion._atomic import atomic_path, write_json


def test_written_files_are_whole_and_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "out" / "r.json", {"a": 1})
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
