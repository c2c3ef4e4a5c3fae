"""SimBA: the DCT basis and its orders, query accounting, the L2 ball, and the paper's claims at small scale."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

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
K = 64  # directions in one pass over a basis of the 8x8 digits (DCT: freq_dims capped at 8)


@pytest.fixture
def batch(digits_data: Dataset) -> tuple[Tensor, Tensor]:
    return digits_data.x_test[:N], digits_data.y_test[:N]


def _check_run(victim: Victim, x: Tensor, y: Tensor, attack: SimBA, budget: int, **kw: Any) -> AttackResult:
    """Ball, bounds, measured success, and query records consistent with each other (on the 8x8 digits,
    where every basis the tests use has K = 64 directions)."""
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
    # the others spend their whole budget, or stop when their passes end (1 or 2 queries per direction)
    passes = attack.passes * K
    unfooled = q[first < 0]
    assert torch.all((unfooled == budget) | ((unfooled >= 1 + passes) & (unfooled <= 1 + 2 * passes)))
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
    with pytest.raises(ConfigError, match="passes"):
        SimBA(threat=ThreatModel(norm="l2", eps=1.0), passes=0)
    assert SimBA(threat=ThreatModel(norm="l2", eps=1.0)).passes == 1  # one pass over the basis, as the reference


class _Constant(nn.Module):
    """Logits that ignore the input: class 0 always wins by the same margin, so no probe ever improves."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.arange(10, 0, -1, dtype=x.dtype).expand(x.shape[0], 10) + 0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize(("basis", "size"), [("dct", 3 * 4 * 4), ("pixel", 3 * 5 * 6)])
def test_one_pass_over_the_basis_then_stop(basis: str, size: int) -> None:
    """A sample it cannot move pays 2 queries per direction: 1 + 2K in all, then the attack stops (the
    reference's `max_iters = min(basis size, num_iters)`), however large the budget."""
    victim = Victim(_Constant(), input_shape=(3, 5, 6))
    x = torch.rand(4, 3, 5, 6, generator=make_generator(0))
    y = torch.zeros(4, dtype=torch.long)
    threat = ThreatModel(norm="l2", eps=1.0)
    kw: dict[str, Any] = {"basis": basis, "freq_dims": 4}
    for passes in (1, 2, 3):
        r = SimBA(threat=threat, n_queries=10_000, passes=passes, **kw).run(victim, x, y)
        assert torch.all(r.queries == 1 + 2 * passes * size)
        assert torch.equal(r.x_adv, x) and not bool(r.success.any())
    r = SimBA(threat=threat, n_queries=2 * size, passes=2, **kw).run(victim, x, y)  # the budget binds first
    assert torch.all(r.queries == 2 * size)


class _Downhill(nn.Module):
    """Class 0 wins by a margin that grows with the pixel sum: on images in [0.5, 1], every `x - epsilon q`
    probe of the pixel basis lowers its probability (and is never clipped), and none fools the model."""

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([2 + 0.01 * s, torch.zeros(x.shape[0], 9, dtype=x.dtype, device=x.device)], 1)


def test_one_query_per_direction_when_every_first_probe_improves() -> None:
    """The other end of a pass's cost: 1 + K queries, each pixel stepped down by epsilon exactly once per
    pass, then the attack stops."""
    victim = Victim(_Downhill(), input_shape=(3, 5, 6))
    x = 0.5 + 0.5 * torch.rand(4, 3, 5, 6, generator=make_generator(0))
    y = torch.zeros(4, dtype=torch.long)
    for passes in (1, 2):
        attack = SimBA(threat=ThreatModel(norm="l2", eps=10.0), basis="pixel", n_queries=10_000, passes=passes)
        r = attack.run(victim, x, y)
        assert torch.all(r.queries == 1 + passes * 3 * 5 * 6) and not bool(r.success.any())
        assert torch.allclose(r.x_adv, x - 0.2 * passes, atol=1e-6)


def test_a_second_pass_only_on_request(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    """On images it cannot fool within eps, one pass costs between 1 + K and 1 + 2K queries; `passes=2`
    walks the basis again from where the first pass ended, and only lowers the true class's probability."""
    x, y = batch
    threat = ThreatModel(norm="l2", eps=0.4)
    one = _check_run(digits_victim, x, y, SimBA(threat=threat), 10_000)
    two = _check_run(digits_victim, x, y, SimBA(threat=threat, passes=2), 10_000)
    attacked = one.clean_correct
    q1, q2 = one.queries[attacked & ~one.success], two.queries[attacked & ~two.success]
    assert q1.numel() >= 10 and q2.numel() >= 10  # eps 0.4 leaves most images unfooled
    assert torch.all((q1 >= 1 + K) & (q1 <= 1 + 2 * K))
    assert torch.all((q2 >= 1 + 2 * K) & (q2 <= 1 + 4 * K))
    assert torch.all(two.success[one.success])  # the first pass is the same run: its successes stay
    both = attacked & ~one.success & ~two.success
    p1 = digits_victim.logits(one.x_adv[both]).softmax(1).gather(1, y[both, None])
    p2 = digits_victim.logits(two.x_adv[both]).softmax(1).gather(1, y[both, None])
    assert torch.all(p2 <= p1 + 1e-6) and float(p2.sum()) < float(p1.sum())


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
    # one pass over the 64 directions of an 8x8 basis is too short a walk for a target: 300 queries' worth
    attack = SimBA(threat=ThreatModel(norm="l2", eps=2.0, targeted=True), n_queries=300, passes=5)
    r = _check_run(digits_victim, x, y, attack, 300, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert float((r.y_adv == target)[attacked].float().mean()) >= 0.75


def test_progress_events(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch[0][:8], batch[1][:8]
    events: list[ProgressEvent] = []
    attack = SimBA(threat=ThreatModel(norm="l2", eps=0.05), n_queries=250, passes=3)
    attack.run(digits_victim, x, y, progress=events.append)
    done = [e.completed for e in events]  # queries spent by the busiest sample, every 100 iterations and at the end
    assert {(e.task, e.total) for e in events} == {("simba", 250)}  # 3 passes of 64 could cost 385 > 250
    assert len(done) == 2 and 101 <= done[0] <= 201 and done[0] < done[1] == 250
    events.clear()
    SimBA(threat=ThreatModel(norm="l2", eps=0.05), n_queries=250).run(digits_victim, x, y, progress=events.append)
    assert [(e.task, e.total) for e in events] == [("simba", 129)]  # one pass of 64: at most 1 + 128 queries
    assert 65 <= events[0].completed <= 129
