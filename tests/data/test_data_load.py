"""load_dataset: specs, the registry and its errors."""

from __future__ import annotations

import pytest

from bastion.core.errors import ConfigError, UnknownNameError
from bastion.core.registry import DATASETS
from bastion.data import load_dataset


def test_every_loader_is_registered() -> None:
    assert {"mnist5k", "digits", "cifar10", "cifar100", "imagefolder", "npz"} <= set(DATASETS.names())


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match='Did you mean "mnist5k"'):
        load_dataset("mnist5")
    with pytest.raises(UnknownNameError, match='Did you mean "cifar10"'):
        load_dataset("cifar1:/data")


@pytest.mark.parametrize("spec", ["", ":x", "npz:"])
def test_malformed_spec(spec: str) -> None:
    with pytest.raises(ConfigError, match="NAME or NAME:PATH"):
        load_dataset(spec)


@pytest.mark.parametrize("name", ["npz", "imagefolder"])
def test_file_loaders_need_a_path(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}:PATH"):
        load_dataset(name)
