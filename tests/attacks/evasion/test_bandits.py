"""Bandits-TD: the time and data priors, query accounting, the ball, and the paper's claims at small scale."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.evasion.bandits import Bandits
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
COST = 3  # two probes and the success check per step


@pytest.fixture
def batch(digits_data: Dataset) -> tuple[Tensor, Tensor]:
    return digits_data.x_test[:N], digits_data.y_test[:N]


@pytest.fixture
def linear() -> tuple[nn.Module, Victim, Tensor, Tensor]:
    """A random linear model on 8x8 images and 6 inputs whose probes stay inside the bounds."""
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    x = torch.rand(6, 1, 8, 8, generator=make_generator(0)) * 0.8 + 0.1
    return model, Victim(model, input_shape=(1, 8, 8)), x, torch.arange(6) % 5


def _check_run(victim: Victim, x: Tensor, y: Tensor, attack: Bandits, budget: int, **kw: Any) -> AttackResult:
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
    assert torch.equal(r.success[attacked], first >= 0)
    assert torch.equal(q[first >= 0], first[first >= 0])  # a fooled sample stops querying at once
    assert torch.all(q % COST == 0)  # whole steps only
    assert torch.all(q[first < 0] == budget // COST * COST)  # the others take every step they can afford
    return r


def test_registered_validated_and_defaults_per_norm() -> None:
    assert ATTACKS.get("bandits") is Bandits
    assert Bandits.access == "scores" and Bandits.oracle_output == "logits"
    linf, l2 = Bandits(threat=ThreatModel(norm="linf", eps=0.05)), Bandits(threat=ThreatModel(norm="l2", eps=5.0))
    assert linf._settings() == (0.01, 100.0, 1.0, 0.1) and l2._settings() == (0.5, 0.1, 0.01, 0.01)
    assert Bandits(threat=ThreatModel(norm="l2", eps=5.0), fd_eta=0.5)._settings() == (0.5, 0.1, 0.01, 0.5)
    assert Bandits(lr=0.2)._lr() == 0.2 and linf._step_cost() == COST
    with pytest.raises(ConfigError, match="tile_size"):
        Bandits(tile_size=0)
    with pytest.raises(ConfigError, match="exploration"):
        Bandits(exploration=-1.0)


def test_data_prior_tiles_the_image() -> None:
    attack = Bandits(tile_size=3)
    v = torch.arange(4.0).view(1, 1, 2, 2)
    up = attack._up(v, 5, 4)
    expected = torch.tensor([[0.0] * 3 + [1.0]] * 3 + [[2.0] * 3 + [3.0]] * 2).view(1, 1, 5, 4)
    assert torch.equal(up, expected)  # tiles of 3 pixels, cut at the border
    assert torch.equal(Bandits(data_prior=False, tile_size=3)._up(v, 2, 2), v)


def _state(x: Tensor, y: Tensor, attack: Bandits, prior: Tensor | None = None) -> dict[str, Tensor]:
    st = attack._init_state({"ids": torch.arange(x.shape[0]), "x0": x, "x": x.clone(), "y": y}, make_generator(0))
    if prior is not None:
        st["prior"] = prior.clone()
    return st


def test_time_prior_learns_the_gradient(linear: tuple[nn.Module, Victim, Tensor, Tensor]) -> None:
    """At a fixed input, the prior carried over 150 steps lines up with the gradient of the loss."""
    model, victim, x, y = linear
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    for norm, eps in (("l2", 1.0), ("linf", 0.1)):
        attack = Bandits(threat=ThreatModel(norm=norm, eps=eps), data_prior=False)
        oracle, st, gen = victim.oracle(6, output="logits"), _state(x, y, attack), make_generator(1)
        for _ in range(150):
            g, st = attack._estimate(oracle, st, gen)
        assert torch.all(oracle.queries == 300)  # two probes per estimate
        cos = F.cosine_similarity(g.flatten(1), true.flatten(1))
        assert bool((cos > 0.6).all()), (norm, cos)
        assert norm == "l2" or bool((st["prior"].abs() <= 1).all())  # exponentiated gradient stays in [-1, 1]


def test_without_time_prior_each_step_starts_afresh(linear: tuple[nn.Module, Victim, Tensor, Tensor]) -> None:
    _, victim, x, y = linear
    old = torch.randn(6, 1, 4, 4, generator=make_generator(2)).clamp(-0.9, 0.9)
    for time_prior in (False, True):
        attack = Bandits(threat=ThreatModel(norm="linf", eps=0.1), tile_size=2, time_prior=time_prior)
        outs = [
            attack._estimate(victim.oracle(6, output="logits"), _state(x, y, attack, p), make_generator(5))[0]
            for p in (None, old)
        ]
        assert torch.equal(outs[0], outs[1]) == (not time_prior)
        tiles = outs[1][:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3)
        assert torch.equal(outs[1], tiles)  # the data prior: one value per 2 x 2 tile


@pytest.mark.parametrize(
    ("norm", "eps", "kw"), [("linf", 0.1, {"online_lr": 10.0}), ("l2", 0.6, {"data_prior": False})]
)
def test_ball_bounds_and_query_records(
    digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str, eps: float, kw: Any
) -> None:
    x, y = batch
    attack = Bandits(threat=ThreatModel(norm=norm, eps=eps), n_queries=100, tile_size=2, **kw)
    r = _check_run(digits_victim, x, y, attack, 100)
    first = torch.tensor(r.extra["first_success_query"])[r.clean_correct]
    assert 0 < int((first >= 0).sum()) < first.numel()  # the settings leave both kinds


def test_budget_of_the_threat_model_and_a_tiny_one(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    for max_queries in (2, 3, 7):  # the oracle raises on a query past it: the attack never sends one
        threat = ThreatModel(norm="linf", eps=0.1, max_queries=max_queries)
        r = _check_run(digits_victim, x, y, Bandits(threat=threat, tile_size=2), max_queries)
        if max_queries == 2:  # one step costs 3: nothing may be sent
            assert int(r.queries.max()) == 0 and torch.equal(r.x_adv, x)


def test_same_seed_same_numbers(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    runs = [Bandits(threat=ThreatModel(norm="l2", eps=0.6), n_queries=60, tile_size=2, seed=s) for s in (3, 3, 4)]
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
    ("norm", "eps", "budget", "kw"), [("linf", 0.2, 300, {"online_lr": 10.0}), ("l2", 1.0, 150, {})]
)
def test_beats_random_noise_with_the_same_budget(
    digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str, eps: float, budget: int, kw: Any
) -> None:
    x, y = batch
    r = Bandits(threat=ThreatModel(norm=norm, eps=eps), n_queries=budget, tile_size=2, **kw).run(digits_victim, x, y)
    assert r.robust_accuracy <= _random_noise_accuracy(digits_victim, x, y, norm, eps, budget) - 0.15


def test_targeted_hits_the_target(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:24], batch[1][:24]
    target = (y + 1) % 10
    attack = Bandits(threat=ThreatModel(norm="l2", eps=2.5, targeted=True), n_queries=300, tile_size=2)
    r = _check_run(digits_victim, x, y, attack, 300, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert float((r.y_adv == target)[attacked].float().mean()) >= 0.75


def test_progress_events(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:8], batch[1][:8]
    events: list[ProgressEvent] = []
    attack = Bandits(threat=ThreatModel(norm="linf", eps=0.005), n_queries=75, tile_size=2)
    attack.run(digits_victim, x, y, progress=events.append)
    assert [(e.task, e.completed, e.total) for e in events] == [("bandits", k, 25) for k in (10, 20)]
