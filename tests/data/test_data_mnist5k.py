"""mnist5k: the embedded default, 4,000 / 1,000 real MNIST digits split by seed."""

from __future__ import annotations

import pytest
import torch

from bastion.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist5k")


def test_shapes_dtypes_and_range(mnist: Dataset) -> None:
    assert mnist.x_train.shape == (4000, 1, 28, 28)
    assert mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert mnist.input_shape == (1, 28, 28)
    assert mnist.num_classes == 10 and mnist.classes == tuple("0123456789")
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == 1  # real digits reach full white
    assert mnist.x_train.mean() > 0.05  # not blank


def test_split_is_stratified_and_disjoint(mnist: Dataset) -> None:
    assert torch.bincount(mnist.y_train).tolist() == [400] * 10
    assert torch.bincount(mnist.y_test).tolist() == [100] * 10
    train, test = mnist.split.train_index, mnist.split.test_index
    assert train is not None and test is not None
    assert len(set(train.tolist()) | set(test.tolist())) == 5000
    assert not set(train.tolist()) & set(test.tolist())
    assert len(set(mnist.y_test[:50].tolist())) > 5  # a prefix of the test split mixes classes


def test_same_seed_same_split_other_seed_other_split(mnist: Dataset) -> None:
    again, other = load_dataset("mnist5k", seed=0), load_dataset("mnist5k", seed=1)
    assert torch.equal(again.x_train, mnist.x_train) and torch.equal(again.y_test, mnist.y_test)
    assert again.split.to_dict() == mnist.split.to_dict()
    assert other.split.to_dict()["test_index_sha256"] != mnist.split.to_dict()["test_index_sha256"]
    assert torch.bincount(other.y_test).tolist() == [100] * 10


def test_statistics_are_those_of_the_training_split(mnist: Dataset) -> None:
    assert mnist.mean[0] == pytest.approx(mnist.x_train.mean().item(), rel=1e-4)
    assert mnist.std[0] == pytest.approx(mnist.x_train.std(correction=0).item(), rel=1e-4)
    record = mnist.split.to_dict()
    assert record["seed"] == 0 and record["n_train"] == 4000 and str(record["source"]).endswith("mnist_5k.csv.gz")
