"""Fixtures of the deployed-model tests: the shipped mnist5k model as a Victim, an ONNX file and a served endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import Tensor, nn

from bastion.core import Victim
from bastion.data import Dataset
from bastion.models.checkpoint import load_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("httpx")

from bastion.deploy import ModelServer, ServedOutput, export_onnx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CHECKPOINT = FIXTURES / "small_cnn-mnist5k.safetensors"
SHAPE = (1, 28, 28)


@pytest.fixture(scope="session")
def mnist_victim(mnist_model: nn.Module) -> Victim:
    return Victim(mnist_model, input_shape=SHAPE)


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped mnist5k model exported to ONNX with its metadata, as `bastion export onnx` does it."""
    model, meta = load_checkpoint(CHECKPOINT)
    out = tmp_path_factory.mktemp("onnx") / "small_cnn.onnx"
    return export_onnx(model, out, input_shape=SHAPE, metadata={"dataset": meta.dataset, "split_seed": meta.split_seed})


@pytest.fixture(scope="session")
def mnist_test(mnist_data: Dataset) -> tuple[Tensor, Tensor]:
    return mnist_data.x_test, mnist_data.y_test


class FaultyServer(ModelServer):
    """The reference server, made to fail (HTTP 503) every `fail_every`-th POST, or to stall `delay` seconds
    on the POSTs numbered in `slow` (1-based; empty: every POST)."""

    def __init__(
        self, *args: object, fail_every: int = 0, delay: float = 0.0, slow: tuple[int, ...] = (), **kw: object
    ) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.fail_every, self.delay, self.slow = fail_every, delay, slow
        self.arrived = 0  # POSTs received, numbered on arrival (a retry may come while a stalled one sleeps)
        self.failed = 0
        self._count = threading.Lock()

    def respond(self, method: str, body: bytes) -> tuple[int, dict[str, object]]:
        if method == "POST":
            with self._count:
                self.arrived += 1
                number = self.arrived
                fail = bool(self.fail_every) and number % self.fail_every == 0
                self.failed += fail
            if fail:
                return 503, {"error": "overloaded"}
            if self.delay and (not self.slow or number in self.slow):
                time.sleep(self.delay)
        return super().respond(method, body)


@pytest.fixture
def serve(mnist_victim: Victim) -> Iterator[object]:
    """serve(output=..., **faults) -> a started server of the mnist5k model; all are closed after the test."""
    servers: list[ModelServer] = []

    def start(output: ServedOutput = "logits", **faults: object) -> FaultyServer:
        info = {"dataset": "mnist5k"}
        server = FaultyServer(mnist_victim.logits, input_shape=SHAPE, output=output, info=info, **faults)
        servers.append(server.start())
        return server

    yield start
    for s in servers:
        s.close()
