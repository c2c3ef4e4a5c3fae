"""One battery over every registered attack (timm's and scikit-learn's trick): a new attack is covered
the moment it is registered, once it has a line of cheap settings below. Each attack's numbers on a
fixed model are pinned (`tests/fixtures/attack-contract.json`): a refactoring must not change them."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import bastion.attacks.evasion  # noqa: F401  (registers the attacks)
from bastion.core import ATTACKS, ThreatModel, Victim
from bastion.data import Dataset
from bastion.models.checkpoint import load_checkpoint

PINS = "attack-contract.json"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Fixture:
    """A cheap setting whose value is the named fixture's (a file an attack needs, made once per session)."""

    name: str


# Cheap settings per attack: enough to exercise every code path on 8x8 digits in a second or two.
CHEAP: dict[str, dict[str, Any]] = {
    "mi-fgsm": {"steps": 3},
    "uap": {"max_passes": 1},
    "fg-uap": {"epochs": 2},
    "transfer": {"surrogate": Fixture("surrogate_checkpoint"), "base_params": "steps=3"},
    "fgsm": {},
    "pgd": {"steps": 5},
    "apgd-ce": {"steps": 10},
    "apgd-dlr": {"steps": 10},
    "apgd-t": {"steps": 5, "n_target_classes": 3},
    "fab-t": {"steps": 5, "n_target_classes": 3},
    "square": {"n_queries": 60},
    "hsja": {"steps": 2, "init_evals": 10},
    "cgba": {"n_iter": 2},
    "cgba-h": {"n_iter": 2},
    "sign-opt": {"k": 10, "n_init": 10},
    "simba": {"n_queries": 60},
    "nes": {"n_samples": 5},
    "bandits": {"tile_size": 2},
    "autoattack": {"square_queries": 60},
}
N = 24


def test_every_registered_attack_has_cheap_settings() -> None:
    assert set(CHEAP) == set(ATTACKS.names("evasion"))


def cases() -> list[tuple[str, str, float]]:
    radii = (("linf", 0.1), ("l2", 0.8))
    return [(name, norm, eps) for name in sorted(CHEAP) for norm, eps in radii if norm in ATTACKS.get(name).norms]


@pytest.fixture(scope="module")
def surrogate_checkpoint() -> str:
    """The surrogate a transfer attack crafts on, as a `surrogate=PATH` value: a second fixed digits model."""
    return str(FIXTURES / "small_cnn-digits-surrogate.safetensors")


@pytest.fixture(scope="module")
def fixed_model() -> nn.Module:
    """A fixed `small_cnn` on the 8x8 digits (95.8% test accuracy), shipped with the tests so the pins hold."""
    return load_checkpoint(FIXTURES / "small_cnn-digits.safetensors")[0]


@pytest.mark.parametrize(("name", "norm", "eps"), cases())
def test_contract(
    name: str,
    norm: str,
    eps: float,
    fixed_model: nn.Module,
    digits_data: Dataset,
    pins: Any,
    request: pytest.FixtureRequest,
) -> None:
    before = {k: v.clone() for k, v in fixed_model.state_dict().items()}
    victim = Victim(fixed_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    cls = ATTACKS.get(name)
    budget = 40 if cls.access != "white-box" else None
    cheap = {k: request.getfixturevalue(v.name) if isinstance(v, Fixture) else v for k, v in CHEAP[name].items()}
    attack = cls(threat=ThreatModel(norm=norm, eps=eps, max_queries=budget), seed=3, **cheap)
    result = attack.run(victim, x, y)

    # inside the ball and the bounds
    delta = (result.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 2**-23) + 2**-23).all())
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    # success re-measured on the model
    assert torch.equal(result.y_adv, victim.predict(result.x_adv))
    assert torch.equal(result.success, result.y_adv != y)
    clean = victim.predict(x) == y  # per sample: no attack turns a misclassified image into a correct one
    assert not bool(((result.y_adv == y) & ~clean).any())
    assert result.clean_accuracy == pytest.approx(clean.float().mean().item())
    # query budget never exceeded; white-box attacks spend none
    assert budget is None or int(result.queries.max()) <= budget
    # same seed, same numbers
    again = attack.run(victim, x, y)
    assert torch.equal(again.x_adv, result.x_adv) and torch.equal(again.queries, result.queries)
    # the model is neither mutated nor left in train mode
    assert not fixed_model.training
    assert all(torch.equal(before[k], v) for k, v in fixed_model.state_dict().items())
    # the record is plain JSON
    d = result.to_dict()
    assert d["attack"] == name and d["n"] == N and isinstance(d["params"], dict)
    # the numbers are those recorded before any refactoring
    numbers = {"robust_accuracy": result.robust_accuracy, "queries": int(result.queries.sum())}
    per_sample = {"x_adv": result.x_adv.numpy().round(6).tolist(), "queries": result.queries.tolist()}
    pins.check(f"{name}/{norm}", numbers, per_sample, abs_tol=1 / N, rel_tol=0.05)
