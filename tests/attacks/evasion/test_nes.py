"""NES: the antithetic gradient estimate, query accounting, the ball, and the paper's claims at small scale."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.evasion.nes import NES
from bastion.core import Victim
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressEvent
from bastion.core.random import make_generator, seed_everything
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.threat import ThreatModel
from bastion.data import Dataset

TOL = 2.0**-23
N = 48


@pytest.fixture
def batch(digits_data: Dataset) -> tuple[Tensor, Tensor]:
    return digits_data.x_test[:N], digits_data.y_test[:N]


def _check_run(victim: Victim, x: Tensor, y: Tensor, attack: NES, budget: int, **kw: Any) -> AttackResult:
    """Ball, bounds, measured success, and query records consistent with each other."""
    r = attack.run(victim, x, y, **kw)
    eps = attack.threat.eps
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert float((r.linf if attack.threat.norm == "linf" else r.l2).max()) <= eps * (1 + TOL) + TOL
    assert torch.equal(r.y_adv, victim.predict(r.x_adv))
    attacked = r.clean_correct if r.target_labels is None else r.clean_correct & (r.target_labels != r.y)
    assert torch.all(r.queries[~attacked] == 0)
    assert int(r.queries.max()) <= budget
    first_all = torch.tensor(r.extra["first_success_query"])
    assert torch.all(first_all[~attacked] == -1)
    first, q = first_all[attacked], r.queries[attacked]
    cost = 2 * attack._pairs() + 1  # the probes and the success check of one step
    assert torch.equal(r.success[attacked], first >= 0)
    assert torch.equal(q[first >= 0], first[first >= 0])  # a fooled sample stops querying at once
    assert torch.all(q % cost == 0)  # whole steps only
    assert torch.all(q[first < 0] == budget // cost * cost)  # the others take every step they can afford
    return r


def test_registered_validated_and_defaults_per_norm() -> None:
    assert ATTACKS.get("nes") is NES
    assert NES.access == "scores" and NES.oracle_output == "logits"
    linf, l2 = NES(threat=ThreatModel(norm="linf", eps=0.05)), NES(threat=ThreatModel(norm="l2", eps=5.0))
    assert (linf._pairs(), linf._lr(), l2._pairs(), l2._lr()) == (50, 0.01, 5, 0.3)
    assert NES(n_samples=3, lr=0.2)._probe_cost() == 6
    with pytest.raises(ConfigError, match="n_samples"):
        NES(n_samples=0)
    with pytest.raises(ConfigError, match="sigma"):
        NES(sigma=0.0)


def test_estimate_follows_the_true_gradient() -> None:
    """On a linear model, the antithetic estimate points along the gradient of the loss and costs 2n queries."""
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    victim = Victim(model, input_shape=(1, 8, 8))
    x = torch.rand(6, 1, 8, 8, generator=make_generator(0)) * 0.8 + 0.1  # probes stay inside the bounds
    y = torch.arange(6) % 5
    oracle = victim.oracle(6, output="logits")
    attack = NES(threat=ThreatModel(norm="linf", eps=0.1), n_samples=200, sigma=0.01)
    st = {"ids": torch.arange(6), "x0": x, "x": x.clone(), "y": y}
    g, _ = attack._estimate(oracle, st, make_generator(1))
    assert torch.all(oracle.queries == 400)
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    cos = F.cosine_similarity(g.flatten(1), true.flatten(1))
    assert bool((cos > 0.7).all()), cos


@pytest.mark.parametrize(("norm", "eps", "lr"), [("linf", 0.1, 0.05), ("l2", 0.6, 0.3)])
def test_ball_bounds_and_query_records(
    digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str, eps: float, lr: float
) -> None:
    x, y = batch
    attack = NES(threat=ThreatModel(norm=norm, eps=eps), n_queries=100, n_samples=4, lr=lr)
    r = _check_run(digits_victim, x, y, attack, 100)
    first = torch.tensor(r.extra["first_success_query"])[r.clean_correct]
    assert 0 < int((first >= 0).sum()) < first.numel()  # the settings leave both kinds


def test_budget_of_the_threat_model_and_a_tiny_one(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    for max_queries in (10, 11, 25):  # the oracle raises on a query past it: the attack never sends one
        threat = ThreatModel(norm="linf", eps=0.1, max_queries=max_queries)
        r = _check_run(digits_victim, x, y, NES(threat=threat, n_samples=5), max_queries)
        if max_queries == 10:  # one step costs 11: nothing may be sent
            assert int(r.queries.max()) == 0 and torch.equal(r.x_adv, x)


def test_same_seed_same_numbers(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    runs = [NES(threat=ThreatModel(norm="linf", eps=0.1), n_queries=60, n_samples=5, seed=s) for s in (3, 3, 4)]
    a, b, c = (attack.run(digits_victim, x, y) for attack in runs)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries) and a.extra == b.extra
    assert not torch.equal(a.x_adv, c.x_adv)


def _random_noise_accuracy(victim: Victim, x: Tensor, y: Tensor, norm: str, eps: float, budget: int) -> float:
    """Random search: a sample is fooled when any of `budget` draws of the same norm fools it."""
    gen = make_generator(1)
    fooled = victim.predict(x) != y
    for _ in range(budget):
        if norm == "linf":
            noise = eps * (torch.randint(0, 2, x.shape, generator=gen) * 2.0 - 1)
        else:
            noise = torch.randn(x.shape, generator=gen)
            noise = eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        fooled |= victim.predict((x + noise).clamp(0, 1)) != y
    return 1 - float(fooled.float().mean())


@pytest.mark.parametrize(
    ("norm", "eps", "budget", "kw"), [("linf", 0.2, 300, {"n_samples": 10, "lr": 0.05}), ("l2", 1.0, 150, {})]
)
def test_beats_random_noise_with_the_same_budget(
    digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str, eps: float, budget: int, kw: Any
) -> None:
    x, y = batch
    r = NES(threat=ThreatModel(norm=norm, eps=eps), n_queries=budget, **kw).run(digits_victim, x, y)
    assert r.robust_accuracy <= _random_noise_accuracy(digits_victim, x, y, norm, eps, budget) - 0.15


def test_targeted_hits_the_target(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:24], batch[1][:24]
    target = (y + 1) % 10
    attack = NES(threat=ThreatModel(norm="l2", eps=2.5, targeted=True), n_queries=300)
    r = _check_run(digits_victim, x, y, attack, 300, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert float((r.y_adv == target)[attacked].float().mean()) >= 0.75


def test_progress_events(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:8], batch[1][:8]
    events: list[ProgressEvent] = []
    attack = NES(threat=ThreatModel(norm="linf", eps=0.01), n_queries=250, n_samples=5)
    attack.run(digits_victim, x, y, progress=events.append)
    assert [(e.task, e.completed, e.total) for e in events] == [("nes", k, 22) for k in (10, 20)]
