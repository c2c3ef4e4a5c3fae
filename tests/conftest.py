"""Shared fixtures: tiny models trained once per test session, on tiny data, with no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.train import train_checkpoint


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `small_cnn` trained for 2 epochs on scikit-learn's 8x8 digits (about 90% test accuracy)."""
    out = tmp_path_factory.mktemp("ckpt") / "small_cnn-digits.safetensors"
    train_checkpoint(model="small_cnn", data="digits", out=out, epochs=2, device="cpu")
    return out
