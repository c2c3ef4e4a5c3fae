"""Transfer: crafted on a surrogate checkpoint, sent once to the victim's label-only oracle."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bastion.attacks.evasion.transfer import Transfer
from bastion.cli.app import app
from bastion.core import CheckpointError, ConfigError, ThreatModel, UnknownNameError, Victim, make_generator
from bastion.core.results import AttackResult
from bastion.data import Dataset
from bastion.models import load_checkpoint
from bastion.train import train_checkpoint

N = 150
EPS = 0.2


@pytest.fixture(scope="module")
def surrogate(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A `small_cnn` on digits trained with seed 1; the victim (`digits_checkpoint`) was trained with seed 0."""
    out = tmp_path_factory.mktemp("surrogate") / "small_cnn-digits-s1.safetensors"
    train_checkpoint(model="small_cnn", data="digits", out=out, epochs=3, seed=1, device="cpu")
    return str(out)


@pytest.fixture(scope="module")
def victim(digits_checkpoint: Path) -> Victim:
    model, meta = load_checkpoint(digits_checkpoint)
    assert meta.recipe["seed"] == 0
    return Victim(model, input_shape=meta.input_shape)


def transfer(surrogate: str, **params: str) -> Transfer:
    return Transfer(threat=ThreatModel(eps=EPS), surrogate=surrogate, **params)


@pytest.fixture(scope="module")
def mi_result(surrogate: str, victim: Victim, digits_data: Dataset) -> AttackResult:
    return transfer(surrogate).run(victim, digits_data.x_test[:N], digits_data.y_test[:N])


def noise_success(victim: Victim, x: torch.Tensor, y: torch.Tensor) -> float:
    """Success of a random +-eps sign pattern per image, on the images the model gets right."""
    ok = victim.predict(x) == y
    noise = EPS * torch.randn(x.shape, generator=make_generator(9)).sign()
    return float((victim.predict((x + noise).clamp(0, 1)) != y)[ok].float().mean())


def test_transfers_far_above_random_noise(mi_result: AttackResult, victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    r = mi_result
    assert float((r.x_adv - x).abs().max()) <= EPS + 1.2e-7
    assert r.success_rate is not None and r.success_rate > noise_success(victim, x, y) + 0.25
    # the surrogate is fooled (white-box) more often than the victim (transfer)
    assert r.extra["surrogate_success_rate"] > 0.8
    assert r.extra["surrogate_success_rate"] >= r.success_rate
    assert r.extra["surrogate_clean_accuracy"] > 0.8


def test_one_label_query_per_attacked_sample(mi_result: AttackResult) -> None:
    r = mi_result
    assert torch.equal(r.queries, r.clean_correct.long())
    # the oracle's answer is what the final re-measurement finds
    assert r.extra["oracle_success_rate"] == pytest.approx(float(r.success[r.clean_correct].float().mean()))
    hits = (r.success & r.clean_correct).tolist()
    assert r.extra["first_success_query"] == [1 if h else -1 for h in hits]


def test_momentum_transfers_as_well_as_fgsm_and_better_than_early_stopped_pgd(
    mi_result: AttackResult, surrogate: str, victim: Victim, digits_data: Dataset
) -> None:
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    fgsm = transfer(surrogate, base="fgsm").run(victim, x, y)
    pgd = transfer(surrogate, base="pgd").run(victim, x, y)
    assert mi_result.success_rate is not None and fgsm.success_rate is not None and pgd.success_rate is not None
    # measured 89% (MI-FGSM), 87% (FGSM), 33% (PGD-40 stopping at the surrogate's boundary)
    assert mi_result.success_rate >= fgsm.success_rate - 0.02
    assert mi_result.success_rate > pgd.success_rate + 0.2


def test_base_params_reach_the_base_attack(surrogate: str, victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    attack = transfer(surrogate, base="pgd", base_params="steps=3, random_start=false")
    base = attack.base_attack()
    assert base.name == "pgd" and base.params()["steps"] == 3 and base.params()["random_start"] is False
    assert base.access == "white-box" and base.threat.eps == EPS
    a, b = attack.run(victim, x, y), attack.run(victim, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.params == {"surrogate": surrogate, "base": "pgd", "base_params": "steps=3, random_start=false"}


def test_targeted_transfer(surrogate: str, victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:40], digits_data.y_test[:40]
    t = (y + 1) % 10
    threat = ThreatModel(eps=0.3, targeted=True)
    r = Transfer(threat=threat, surrogate=surrogate, base_params="steps=20").run(victim, x, y, target_labels=t)
    assert r.extra["surrogate_success_rate"] > 0.5
    assert torch.equal(r.success, r.y_adv == t)


def test_user_errors_are_one_line(surrogate: str, tmp_path: Path) -> None:
    threat = ThreatModel(eps=EPS)
    cases = [
        ({}, ConfigError, "surrogate=PATH"),
        ({"surrogate": str(tmp_path / "none.safetensors")}, CheckpointError, "not found"),
        ({"surrogate": surrogate, "base": "squre"}, UnknownNameError, 'Did you mean "square"'),
        ({"surrogate": surrogate, "base": "square"}, ConfigError, "white-box"),
        ({"surrogate": surrogate, "base": "transfer"}, ConfigError, "white-box"),
        ({"surrogate": surrogate, "base_params": "stepz=3"}, ConfigError, "base_params.*stepz.*steps"),
        ({"surrogate": surrogate, "base_params": "steps=0"}, ConfigError, "steps must be >= 1"),
    ]
    for params, error, match in cases:
        with pytest.raises(error, match=match) as info:
            Transfer(threat=threat, **params)
        assert "\n" not in str(info.value)


def test_cli(surrogate: str, digits_checkpoint: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "t.json"
    base = ["attack", "transfer", "-c", str(digits_checkpoint), "--n", "30", "--eps", "0.2", "-q", "--no-checks"]
    result = runner.invoke(
        app, [*base, f"surrogate={surrogate}", "base=pgd", "base_params=steps=5", "--json", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    d = json.loads(out.read_text())
    assert d["params"]["base"] == "pgd" and d["queries_max"] == 1
    assert "surrogate_success_rate" in d["extra"]
    missing = runner.invoke(app, base)
    assert missing.exit_code == 2 and "surrogate=PATH" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stderr.strip().count("\n") == 0
