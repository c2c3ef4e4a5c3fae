"""ONNX: a checkpoint exported to ONNX gives the PyTorch model's labels and logits, its oracle keeps the
budgets, and a black-box attack through it gives the in-process attack's result at the same seed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import Tensor

from bastion.attacks.evasion.hsja import HSJA
from bastion.attacks.evasion.pgd import PGD
from bastion.attacks.evasion.square import Square
from bastion.core import CheckpointError, ConfigError, QueryBudgetExceeded, ThreatModel, Victim
from bastion.deploy import OnnxModel, read_onnx_metadata

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_export_round_trip_gives_the_models_labels_and_logits(
    onnx_file: Path, mnist_victim: Victim, mnist_test: tuple[Tensor, Tensor]
) -> None:
    x, _ = mnist_test  # all 1,000 test images
    model = OnnxModel(onnx_file, batch_size=384)  # 3 batches: the dynamic batch axis takes 384 and 232
    assert torch.equal(model.predict(x), mnist_victim.predict(x))
    assert torch.allclose(model.logits(x), mnist_victim.logits(x), atol=1e-4, rtol=0)
    meta = read_onnx_metadata(onnx_file)
    assert meta["input_shape"] == [1, 28, 28] and meta["bounds"] == [0.0, 1.0] and meta["num_classes"] == 10
    assert meta["dataset"] == "mnist5k" and meta["format"] == "bastion-onnx/1"
    assert (model.input_shape, model.num_classes, model.reveals) == ((1, 28, 28), 10, "logits")
    assert model.identity == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert not [p for p in onnx_file.parent.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_onnx_oracle_never_exceeds_its_budget(onnx_file: Path, mnist_test: tuple[Tensor, Tensor]) -> None:
    x = mnist_test[0][:4]
    oracle = OnnxModel(onnx_file).oracle(4, output="probs", max_queries=2)
    oracle.query(x)
    oracle.query(x[:2], torch.tensor([0, 1]))  # samples 0 and 1 spend their second query
    with pytest.raises(QueryBudgetExceeded):
        oracle.query(x[:2], torch.tensor([2, 0]))
    assert oracle.queries.tolist() == [2, 2, 1, 1]  # the refused query cost nothing, not even sample 2
    refusing = OnnxModel(onnx_file).oracle(2, output="label", max_queries=1, on_exhausted="refuse")
    refusing.query(x[:2])
    out = refusing.query(torch.cat([x[:2], x[:1]]), torch.tensor([0, 1, 0]))
    assert out.tolist() == [-1, -1, -1] and refusing.queries.tolist() == [1, 1]


@pytest.mark.parametrize("attack", ["square", "hsja"])
def test_black_box_attack_through_onnx_matches_in_process(
    attack: str, onnx_file: Path, mnist_victim: Victim, mnist_test: tuple[Tensor, Tensor]
) -> None:
    x, y = mnist_test[0][:6], mnist_test[1][:6]
    if attack == "square":
        atk: Square | HSJA = Square(threat=ThreatModel(eps=0.3, max_queries=150), n_queries=150, seed=3)
    else:
        atk = HSJA(threat=ThreatModel(norm="l2", eps=2.0, max_queries=150), steps=5, init_evals=20, seed=3)
    local = atk.run(mnist_victim, x, y)
    served = atk.run(OnnxModel(onnx_file), x, y)
    assert int(served.queries.max()) <= 150
    assert torch.equal(served.success, local.success) and torch.equal(served.queries, local.queries)
    assert torch.allclose(served.x_adv, local.x_adv, atol=1e-5)


def test_white_box_attack_and_bad_files_are_refused(onnx_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="white-box attack"):
        PGD(threat=ThreatModel(eps=0.3)).run(OnnxModel(onnx_file), torch.zeros(1, 1, 28, 28), torch.zeros(1))
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxModel(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        OnnxModel(junk)
