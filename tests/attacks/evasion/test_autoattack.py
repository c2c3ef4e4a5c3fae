"""AutoAttack against the reference: per image and per stage, the outcomes `fra31/auto-attack` recorded.

`tests/fixtures/autoattack-reference.json` holds, for a fixed adversarially trained `mlp` on the 8x8
digits (`tests/fixtures/mlp-digits-pgd-at.safetensors`), 100 test images and two L-inf radii, whether each image is
correct clean and still robust after APGD-CE, APGD-T, FAB-T and Square of the reference's standard
version (commit, call, seed and torch version in the file; `benchmarks/autoattack_record.py` made it
by running the reference). bastion's `autoattack` must reach the same robust accuracy after every
stage, within one image per hundred, and disagree on at most one image per hundred per stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bastion._atomic import sha256_file
from bastion.attacks.evasion.apgd import APGDCE
from bastion.attacks.evasion.autoattack import AutoAttack, robust_after_stages
from bastion.attacks.evasion.square import Square
from bastion.core import DataError, ThreatModel, Victim
from bastion.data import Dataset, load_dataset
from bastion.models.checkpoint import load_checkpoint

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
RECORD: dict[str, Any] = json.loads((FIXTURES / "autoattack-reference.json").read_text())
MODEL = FIXTURES / RECORD["model"]["file"]


def per_hundred(n: int) -> int:
    """Images allowed to differ: one per hundred (at least one)."""
    return max(1, math.floor(n / 100))


@pytest.fixture(scope="module")
def victim() -> Victim:
    model, meta = load_checkpoint(MODEL)
    return Victim(model, input_shape=meta.input_shape)


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    data = RECORD["data"]
    ds: Dataset = load_dataset(data["dataset"], seed=data["split_seed"])
    idx = torch.tensor(data["indices"])
    return ds.x_test[idx], ds.y_test[idx]


def test_the_record_is_of_the_shipped_model_and_of_this_ensemble() -> None:
    assert sha256_file(MODEL) == RECORD["model"]["sha256"], (
        f"{MODEL.name} is not the model the reference was run on; re-record with benchmarks/autoattack_record.py"
    )
    assert RECORD["stages"] == [s.name for s in AutoAttack().stages()]
    assert RECORD["reference"]["version"] == "standard" and RECORD["norm"] == "linf"


@pytest.mark.parametrize("entry", RECORD["radii"], ids=lambda e: f"eps={e['eps']}")
def test_matches_the_reference_per_image_and_per_stage(
    victim: Victim, images: tuple[torch.Tensor, torch.Tensor], entry: dict[str, Any]
) -> None:
    x, y = images
    n, eps = x.shape[0], entry["eps"]
    result = AutoAttack(threat=ThreatModel(eps=eps), seed=RECORD["seed"]).run(victim, x, y)
    ours = robust_after_stages(result)
    assert list(ours) == ["clean", *RECORD["stages"]]
    allowed = per_hundred(n)
    counts = {}  # stage: (robust by bastion, robust by the reference, images that differ)
    for stage, bits in ours.items():
        want = torch.tensor([c == "1" for c in entry["robust"][stage]])
        counts[stage] = (int(bits.sum()), int(want.sum()), int((bits != want).sum()))
    off = {s: c for s, c in counts.items() if abs(c[0] - c[1]) > allowed or c[2] > allowed}
    assert not off, f"eps {eps}: (bastion, reference, differ) per stage {counts}; {allowed} allowed per {n}"
    assert counts["clean"][2] == 0, f"the same model on the same images: clean flags must agree, {counts['clean']}"
    assert result.robust_accuracy == float(ours[RECORD["stages"][-1]].double().mean())
    # each stage attacked exactly the samples every earlier one left robust
    before = list(ours.values())[:-1]  # robust when each stage started: clean, then after each stage
    assert [s["attacked"] for s in result.extra["stages"]] == [int(b.sum()) for b in before]


def test_robust_after_stages_wants_an_autoattack_result(
    victim: Victim, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    result = APGDCE(threat=ThreatModel(eps=0.1), steps=2).run(victim, x[:8], y[:8])
    with pytest.raises(DataError, match="needs an autoattack result"):
        robust_after_stages(result)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 2.0)])
def test_square_stage_takes_autoattacks_own_settings(norm: str, eps: float) -> None:
    """fra31/auto-attack `autoattack.py` gives its Square p_init 0.8, 5,000 queries, one restart and the
    schedule unrescaled for both norms, although Square's own L2 default is the paper's 0.1."""
    threat = ThreatModel(norm=norm, eps=eps)
    square = AutoAttack(threat=threat).stages()[-1]
    assert isinstance(square, Square) and square.threat == threat
    assert (square.p_init, square.n_queries, square.n_restarts) == (0.8, 5000, 1)
    assert not square.rescale_schedule and square.loss == "margin"
