"""One battery over every registered membership attack, OOD detector, bit-flip and extraction attack:
scores are finite and reproducible, each membership candidate costs exactly one query per view
(shadow-model attacks get tiny shadows), a bit flip is one bit and the Hamming distance counts them, an
extraction spends at most its total budget, the model is left as it was, and the record is plain JSON."""

import json

import pytest
import torch
from torch import nn

import bastion.attacks.extraction
import bastion.attacks.privacy
import bastion.attacks.weights
import bastion.defenses  # noqa: F401  (registers the detectors)
from bastion.core import ATTACKS, DEFENSES, Victim
from bastion.data import Dataset
from bastion.models import build_model
from bastion.train import TrainConfig, fit


def _tiny_shadow(x: torch.Tensor, y: torch.Tensor, i: int) -> nn.Module:
    """A shadow model for the 8x8 digits: `small_cnn`, two epochs on its half of the candidates."""
    torch.manual_seed(i)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    fit(model, x, y, TrainConfig(epochs=2, lr=3e-3, seed=i))
    return model.eval()


@pytest.mark.parametrize("name", ATTACKS.names("membership"))
def test_membership_contract(name: str, digits_model: nn.Module, digits_data: Dataset) -> None:
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x = torch.cat([digits_data.x_train[:30], digits_data.x_test[:30]])
    y = torch.cat([digits_data.y_train[:30], digits_data.y_test[:30]])
    member = torch.arange(60) < 30
    cls = ATTACKS.get(name)
    attack = cls(seed=3, **({"shadows": 4} if cls.needs_reference else {}))
    reference = attack.fit(x, y, _tiny_shadow) if cls.needs_reference else None  # never sees `member`
    result = attack.run(victim, x, y, member, reference=reference)
    assert attack.family == "membership" and attack.access == "scores"
    assert result.scores.shape == (60,) and bool(torch.isfinite(result.scores).all())
    assert result.queries is not None and result.queries.tolist() == [len(attack.views(x))] * 60
    assert torch.equal(attack.run(victim, x, y, member, reference=reference).scores, result.scores)
    assert 0.0 <= result.auroc <= 1.0
    assert not digits_model.training and all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("name", DEFENSES.names("ood"))
def test_ood_detector_contract(name: str, digits_model: nn.Module, digits_data: Dataset) -> None:
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x_id, x_ood = digits_data.x_test[:40], torch.rand(25, 1, 8, 8)
    detector = DEFENSES.get(name)()
    state = detector.fit(victim, digits_data.x_train[:200], digits_data.y_train[:200])
    result = detector.run(victim, x_id, x_ood, state=state)
    assert detector.family == "ood" and result.method == name
    assert result.scores.shape == (65,) and int(result.positive.sum()) == 40
    assert bool(torch.isfinite(result.scores).all())
    assert torch.equal(detector.run(victim, x_id, x_ood, state=state).scores, result.scores)
    assert not digits_model.training and all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("name", ATTACKS.names("bitflip"))
def test_bitflip_contract(name: str, digits_model: nn.Module, digits_data: Dataset) -> None:
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:60], digits_data.y_test[:60]
    cls = ATTACKS.get(name)
    attack = cls(max_flips=4, seed=3, **({"batch_size": 32} if "batch_size" in cls.__dataclass_fields__ else {}))
    x_attack, y_attack = (
        (digits_data.x_train[:100], digits_data.y_train[:100]) if attack.needs_attack_images else (None, None)
    )
    result = attack.run(victim, x, y, x_attack=x_attack, y_attack=y_attack)
    assert attack.family == "bitflip" and result.method == name
    assert result.n_flips == 4 == result.hamming and len(result.accuracy) == 5
    assert all(bin((f.before ^ f.after) & 0xFF).count("1") == 1 and f.bit in range(8) for f in result.flips)
    assert all(0 <= f.index < result.layers[f.layer] for f in result.flips)
    assert all(0.0 <= a <= 1.0 for a in result.accuracy) and result.n_eval == 60
    assert attack.run(victim, x, y, x_attack=x_attack, y_attack=y_attack).flips == result.flips
    assert not digits_model.training and all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("name", ATTACKS.names("extraction"))
def test_extraction_contract(name: str, digits_model: nn.Module, digits_data: Dataset) -> None:
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    attack = ATTACKS.get(name)(budget=24, epochs=1, seed=3, transfer_n=10)
    args = (digits_data.x_train[:200], digits_data.y_train[:200], digits_data.x_test[:40], digits_data.y_test[:40])

    def factory() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    for output in ("probs", "label"):
        result = attack.run(victim, factory, *args, output=output)
        assert attack.family == "extraction" and result.method == name
        assert 0 < result.queries <= 24 and result.curve[-1].queries <= result.queries
        assert 0.0 <= result.fidelity <= 1.0 and result.transfer is not None
        assert torch.equal(attack.run(victim, factory, *args, output=output).surrogate_pred, result.surrogate_pred)
        json.dumps(result.to_dict(), allow_nan=False)
    assert not digits_model.training and all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())
