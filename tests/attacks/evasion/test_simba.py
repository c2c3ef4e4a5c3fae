"""SimBA: the DCT basis and its orders, query accounting, the L2 ball, and the paper's claims at small scale."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from bastion.attacks.evasion.simba import SimBA, basis_order
from bastion.core import Victim
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressEvent
from bastion.core.random import make_generator
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.threat import ThreatModel
from bastion.data import Dataset

TOL = 2.0**-23
N = 48


@pytest.fixture
def batch(digits_data: Dataset) -> tuple[Tensor, Tensor]:
    return digits_data.x_test[:N], digits_data.y_test[:N]


def _check_run(victim: Victim, x: Tensor, y: Tensor, attack: SimBA, budget: int, **kw: Any) -> AttackResult:
    """Ball, bounds, measured success, and query records consistent with each other."""
    r = attack.run(victim, x, y, **kw)
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert float(r.l2.max()) <= attack.threat.eps * (1 + TOL) + TOL
    assert torch.equal(r.y_adv, victim.predict(r.x_adv))
    attacked = r.clean_correct if r.target_labels is None else r.clean_correct & (r.target_labels != r.y)
    assert torch.all(r.queries[~attacked] == 0)
    assert int(r.queries.max()) <= budget
    first_all = torch.tensor(r.extra["first_success_query"])
    assert torch.all(first_all[~attacked] == -1)
    first, q = first_all[attacked], r.queries[attacked]
    assert torch.equal(r.success[attacked], first >= 0)
    assert torch.equal(q[first >= 0], first[first >= 0])  # a fooled sample stops querying at once
    assert torch.all(q[first < 0] == budget)  # the others spend their whole budget
    return r


def test_basis_orders() -> None:
    gen = make_generator(0)
    shape = (2, 8, 8)
    pixel = basis_order(3, shape, "pixel", "rand", 3, 2, gen)
    assert torch.equal(pixel.sort(1).values, torch.arange(128).expand(3, 128))
    low = basis_order(3, shape, "dct", "rand", 3, 2, gen)
    assert low.shape == (3, 18)
    ch, u, v = low // 64, (low // 8) % 8, low % 8
    assert bool((u < 3).all() and (v < 3).all()) and set(ch.flatten().tolist()) == {0, 1}
    assert low.unique().numel() == 18 and not torch.equal(low[0], low[1])  # one random order per sample
    strided = basis_order(3, shape, "dct", "strided", 3, 2, gen)
    assert torch.equal(strided.sort(1).values, torch.arange(128).expand(3, 128))
    u, v = (strided // 8) % 8, strided % 8
    band = torch.where((u < 3) & (v < 3), 0, (torch.maximum(u, v) - 3) // 2 + 1)
    assert torch.all(band[:, 1:] >= band[:, :-1])  # the low block first, then bands of 2 frequencies
    assert torch.equal(band[0].bincount(), torch.tensor([18, 2 * (5 * 5 - 3 * 3), 2 * (7 * 7 - 5 * 5), 2 * 15]))


def test_directions_are_unit_basis_images() -> None:
    shape = (3, 6, 10)
    j = torch.arange(3 * 6 * 10)
    for basis in ("pixel", "dct"):
        q = SimBA(threat=ThreatModel(norm="l2", eps=1.0), basis=basis)._direction(j, shape).flatten(1)
        assert torch.allclose(q @ q.T, torch.eye(j.numel()), atol=1e-5)  # an orthonormal basis


def test_registered_and_validated() -> None:
    assert ATTACKS.get("simba") is SimBA
    assert SimBA.access == "scores" and SimBA.oracle_output == "probs"
    with pytest.raises(ConfigError, match="l2"):
        SimBA(threat=ThreatModel(norm="linf", eps=0.1))
    with pytest.raises(ConfigError, match="epsilon"):
        SimBA(threat=ThreatModel(norm="l2", eps=1.0), epsilon=0.0)
    with pytest.raises(ConfigError, match="basis"):
        SimBA(threat=ThreatModel(norm="l2", eps=1.0), basis="haar")  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{}, {"basis": "pixel"}, {"order": "strided", "freq_dims": 4, "stride": 2}])
def test_ball_bounds_and_query_records(digits_victim: Victim, batch: tuple[Tensor, Tensor], kw: Any) -> None:
    x, y = batch
    r = _check_run(digits_victim, x, y, SimBA(threat=ThreatModel(norm="l2", eps=0.6), n_queries=40, **kw), 40)
    first = torch.tensor(r.extra["first_success_query"])[r.clean_correct]
    assert 0 < int((first >= 0).sum()) < first.numel()  # the settings leave both kinds


def test_budget_of_the_threat_model_and_a_tiny_one(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    for max_queries in (1, 2, 3, 30):  # the oracle raises on a query past it: the attack never sends one
        threat = ThreatModel(norm="l2", eps=0.6, max_queries=max_queries)
        r = _check_run(digits_victim, x, y, SimBA(threat=threat), max_queries)
        if max_queries == 1:  # only the clean image was seen: nothing moved
            assert torch.equal(r.x_adv, x)


def test_same_seed_same_numbers(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    runs = [SimBA(threat=ThreatModel(norm="l2", eps=0.6), n_queries=30, seed=s) for s in (3, 3, 4)]
    a, b, c = (attack.run(digits_victim, x[:24], y[:24]) for attack in runs)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries) and a.extra == b.extra
    assert not torch.equal(a.x_adv, c.x_adv)


def _random_noise_accuracy(victim: Victim, x: Tensor, y: Tensor, eps: float, budget: int) -> float:
    """Random search: a sample is fooled when any of `budget` draws on the L2 sphere of radius eps fools it."""
    gen = make_generator(1)
    fooled = victim.predict(x) != y
    for _ in range(budget):
        noise = torch.randn(x.shape, generator=gen)
        fooled |= victim.predict((x + eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)) != y
    return 1 - float(fooled.float().mean())


@pytest.mark.parametrize("basis", ["dct", "pixel"])
def test_beats_random_noise_with_the_same_budget(
    digits_victim: Victim, batch: tuple[Tensor, Tensor], basis: str
) -> None:
    x, y = batch
    eps, budget = 1.0, 100
    r = SimBA(threat=ThreatModel(norm="l2", eps=eps), n_queries=budget, basis=basis).run(digits_victim, x, y)  # type: ignore[arg-type]
    assert r.robust_accuracy <= _random_noise_accuracy(digits_victim, x, y, eps, budget) - 0.3


def test_targeted_hits_the_target(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:24], batch[1][:24]
    target = (y + 1) % 10
    attack = SimBA(threat=ThreatModel(norm="l2", eps=2.0, targeted=True), n_queries=300)
    r = _check_run(digits_victim, x, y, attack, 300, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert float((r.y_adv == target)[attacked].float().mean()) >= 0.75


def test_progress_events(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:8], batch[1][:8]
    events: list[ProgressEvent] = []
    SimBA(threat=ThreatModel(norm="l2", eps=0.05), n_queries=250).run(digits_victim, x, y, progress=events.append)
    done = [e.completed for e in events]  # queries spent by the busiest sample, every 100 iterations
    assert {(e.task, e.total) for e in events} == {("simba", 250)}
    assert len(done) >= 1 and done == sorted(done) and 101 <= done[0] <= 201 and done[-1] <= 250
