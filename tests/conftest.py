"""Shared fixtures: tiny models trained once per test session, on tiny data, with no downloads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.core import Victim
from bastion.data import Dataset, load_dataset
from bastion.models import build_model
from bastion.train import TrainConfig, fit, train_checkpoint


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """The tests' batches are tiny: intra-op threads gain nothing on them and, when several processes
    share the two cores, their spinning slows the suite several times over."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `small_cnn` trained for 2 epochs on scikit-learn's 8x8 digits (about 90% test accuracy)."""
    out = tmp_path_factory.mktemp("ckpt") / "small_cnn-digits.safetensors"
    train_checkpoint(model="small_cnn", data="digits", out=out, epochs=2, device="cpu")
    return out


@pytest.fixture(scope="session")
def digits_data() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_model(digits_data: Dataset) -> nn.Module:
    """A `small_cnn` trained for 3 epochs on the 8x8 digits (about 95% test accuracy), in eval mode."""
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(model, digits_data.x_train, digits_data.y_train, TrainConfig(epochs=3, lr=3e-3, seed=0))
    return model.eval()


@pytest.fixture
def digits_victim(digits_model: nn.Module) -> Victim:
    return Victim(digits_model, input_shape=(1, 8, 8))
