"""Shared fixtures: tiny models trained once per test session, on tiny data, with no downloads."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bastion.attacks.poisoning import BadNets, Poisoned
from bastion.audit import AuditTarget
from bastion.cli._target import ModelSource
from bastion.core import Victim
from bastion.data import Dataset, load_dataset
from bastion.models import build_model
from bastion.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bastion.train import TrainConfig, fit, train_checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures"


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


@pytest.fixture(scope="session")
def overfit_checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_data: Dataset) -> Path:
    """A `small_cnn` that memorised the first 200 training images of mnist5k (no augmentation, no weight
    decay, 50 epochs): 100% on them, about 88% on the test split, so its membership leaks. (The 8x8
    digits are too easy: a model that memorises 300 of them still scores 97% on the rest.) Trained with
    `fit` and no per-epoch evaluation, which would cost ten times the training here."""
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 28, "mean": mnist_data.mean, "std": mnist_data.std}
    model = build_model("small_cnn", **kwargs)
    cfg = TrainConfig(epochs=50, lr=3e-3, augment="none", seed=0)
    fit(model, mnist_data.x_train[:200], mnist_data.y_train[:200], cfg)
    meta = CheckpointMeta(
        architecture="small_cnn",
        arch_kwargs={**kwargs, "mean": list(mnist_data.mean), "std": list(mnist_data.std)},
        dataset="mnist5k",
        split_seed=0,
        train_n=200,
        num_classes=10,
        input_shape=(1, 28, 28),
        mean=mnist_data.mean,
        std=mnist_data.std,
        recipe={"name": "standard", **asdict(cfg)},
    )
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "small_cnn-mnist5k-overfit.safetensors", model, meta)


@pytest.fixture(scope="session")
def mnist_data() -> Dataset:
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def mnist_model() -> nn.Module:
    """The default model (`small_cnn`, standard recipe, mnist5k; 98.4% test accuracy), shipped with the tests."""
    return load_checkpoint(FIXTURES / "small_cnn-mnist5k.safetensors")[0]


@dataclass(frozen=True)
class Backdoored:
    """A model trained on a poisoned training set: the clean model's target, the attack, the set, the model."""

    target: AuditTarget
    attack: BadNets
    poisoned: Poisoned
    victim: Victim


@pytest.fixture(scope="session")
def badnets_mnist5k() -> Backdoored:
    """The default model's architecture and recipe trained on its 4,000 training images with 5% of them
    stamped by BadNets (target 0, seed 0): ASR about 99%, clean accuracy as the clean model's."""
    target = ModelSource(checkpoint=FIXTURES / "small_cnn-mnist5k.safetensors").target()
    attack = BadNets(rate=0.05, seed=0)
    x, y = target.members(target.n_members)
    poisoned = attack.poison(x, y, 10)
    model = target.train_fresh(poisoned.x, poisoned.y, seed=0)
    return Backdoored(target, attack, poisoned, Victim(model, input_shape=(1, 28, 28), num_classes=10))


# --- pinned numbers --------------------------------------------------------------------------------


class Pins:
    """Numbers recorded once from a known-good build and checked on every run, so that a refactoring
    cannot change what an attack or an audit computes without a test saying so.

    On the platform that recorded them (same torch build and CPU capability, hence the same kernels)
    the check is exact: the per-sample digest must match. Elsewhere float rounding may differ in the
    last bits, so the headline numbers are compared with a tolerance instead.
    `BASTION_RECORD_PINS=1 pytest ...` rewrites the file from the current build.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.record = os.environ.get("BASTION_RECORD_PINS") == "1"
        self.platform = {"torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability()}
        stored = json.loads(path.read_text()) if path.exists() else {"platform": {}, "entries": {}}
        self.stored_platform, self.entries = stored["platform"], stored["entries"]
        self.recorded: dict[str, Any] = {}

    def check(self, key: str, numbers: dict[str, Any], per_sample: Any, *, abs_tol: float, rel_tol: float) -> None:
        digest = hashlib.sha256(json.dumps(per_sample, sort_keys=True).encode()).hexdigest()
        if self.record:
            self.recorded[key] = {"numbers": numbers, "digest": digest}
            return
        assert key in self.entries, f"no pinned numbers for {key!r} in {self.path}; record them (BASTION_RECORD_PINS=1)"
        pinned = self.entries[key]
        if self.platform == self.stored_platform:
            assert numbers == pinned["numbers"], f"{key}: numbers changed"
            assert digest == pinned["digest"], f"{key}: per-sample results changed"
            return
        assert set(numbers) == set(pinned["numbers"]), key
        for name, want in pinned["numbers"].items():
            got = numbers[name]
            if want is None or got is None:
                assert want == got, f"{key}: {name} = {got}, pinned {want}"
            else:
                assert abs(got - want) <= abs_tol + rel_tol * abs(want), f"{key}: {name} = {got}, pinned {want}"

    def save(self) -> None:
        if self.record and self.recorded:
            entries = {**self.entries, **self.recorded}
            self.path.write_text(json.dumps({"platform": self.platform, "entries": entries}, indent=1) + "\n")


@pytest.fixture(scope="module")
def pins(request: pytest.FixtureRequest) -> Iterator[Pins]:
    """The pin file named by the test module's `PINS` (a file name under tests/fixtures/)."""
    p = Pins(FIXTURES / request.module.PINS)
    yield p
    p.save()
