"""Square Attack: the schedule and the L2 bump, query accounting, the ball, and the paper's claims at small scale."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import Tensor, nn

import bastion.data
import bastion.models
import bastion.train
from bastion.attacks.evasion.square import Square, eta, p_schedule
from bastion.core import Victim
from bastion.core.errors import ConfigError
from bastion.core.progress import ProgressEvent
from bastion.core.random import make_generator, seed_everything
from bastion.core.registry import ATTACKS
from bastion.core.threat import ThreatModel

TOL = 2.0**-23


@pytest.fixture(scope="module")
def digits() -> tuple[Victim, Tensor, Tensor]:
    """A `small_cnn` trained for 3 epochs on the 8x8 digits, and 48 test images (about 85% correct)."""
    seed_everything(0)
    ds = bastion.data.load_dataset("digits")
    model = bastion.models.build_model("small_cnn", num_classes=10, in_channels=1, image_size=8)
    bastion.train.fit(model, ds.x_train, ds.y_train, bastion.train.TrainConfig(epochs=3))
    return Victim(model, input_shape=(1, 8, 8)), ds.x_test[:48], ds.y_test[:48]


def _check_run(victim: Victim, x: Tensor, y: Tensor, attack: Square, budget: int) -> None:
    """Ball, bounds, measured success, and query records consistent with each other."""
    r = attack.run(victim, x, y)
    eps = attack.threat.eps
    assert float(r.x_adv.min()) >= 0.0 and float(r.x_adv.max()) <= 1.0
    assert float((r.linf if attack.threat.norm == "linf" else r.l2).max()) <= eps + TOL
    assert torch.equal(r.y_adv, victim.predict(r.x_adv))
    attacked = r.clean_correct
    assert torch.all(r.queries[~attacked] == 0)
    assert int(r.queries.max()) <= budget
    first_all = torch.tensor(r.extra["first_success_query"])
    assert first_all.shape[0] == x.shape[0] and torch.all(first_all[~attacked] == -1)
    assert all(isinstance(q, int) for q in r.extra["first_success_query"])
    first, q = first_all[attacked], r.queries[attacked]
    assert torch.equal(r.success[attacked], first >= 0)
    assert torch.equal(q[first >= 0], first[first >= 0])  # a fooled sample stops querying at once
    assert torch.all(q[first < 0] == budget)  # the others spend 1 (init) + budget - 1 iterations
    assert 0 < int((first >= 0).sum()) < first.shape[0]  # the settings leave both kinds


def test_p_schedule_matches_the_table() -> None:
    p = 0.8
    table = [(0, 1), (10, 1), (11, 2), (50, 2), (51, 4), (200, 4), (201, 8), (500, 8), (501, 16), (1000, 16)]
    table += [(1001, 32), (2000, 32), (2001, 64), (4000, 64), (4001, 128), (6000, 128), (6001, 256)]
    table += [(8000, 256), (8001, 512), (9999, 512)]
    for i, div in table:
        assert p_schedule(i, 10_000, p) == pytest.approx(p / div), i
        assert p_schedule(i, 123, p, rescale=False) == pytest.approx(p / div), i
    # rescaled to 10,000 queries: at N = 5000, i' = 2i; at N = 1000, i' = 10i
    assert p_schedule(5, 5000, p) == p and p_schedule(6, 5000, p) == p / 2
    assert p_schedule(1, 1000, p) == p and p_schedule(2, 1000, p) == p / 2
    assert p_schedule(999, 1000, p) == p / 512


def test_eta_bump() -> None:
    top = torch.tensor([0.25, 1.25, 0.25])
    bottom = torch.tensor([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25]])
    expected = torch.cat([top[None] / top.norm(), -bottom / bottom.norm()]) / 2**0.5
    assert torch.allclose(eta(3), expected)
    for s in range(1, 12):
        e = eta(s)
        assert e.shape == (s, s)
        assert float(e.norm()) == pytest.approx(1.0, abs=1e-6)
        assert torch.all(e[: s // 2] > 0) and torch.all(e[s // 2 :] < 0)
        if s % 2 == 1:  # the attack's L2 windows are odd: mirror-symmetric left to right
            assert torch.allclose(e, e.flip(1))
        if s >= 2:  # each half peaks at its centre cell
            assert e[(s // 2) // 2, s // 2] == e[: s // 2].max()
            assert e[s // 2 + (s - s // 2) // 2, s // 2] == e[s // 2 :].min()


def test_registered_and_validated() -> None:
    assert ATTACKS.get("square") is Square
    assert Square.access == "scores" and Square.oracle_output == "logits"
    with pytest.raises(ConfigError, match="p_init"):
        Square(p_init=0.0)
    with pytest.raises(ConfigError, match="n_queries"):
        Square(n_queries=0)


@pytest.mark.parametrize(("norm", "eps", "p_init"), [("linf", 0.1, 0.8), ("l2", 0.5, 0.1)])
def test_default_p_init_per_norm(digits: tuple[Victim, Tensor, Tensor], norm: str, eps: float, p_init: float) -> None:
    """L-inf starts from AutoAttack's p_init 0.8, L2 from the paper's 0.1 (max-andr/square-attack `attack.py`)."""
    victim, x, y = digits
    threat = ThreatModel(norm=norm, eps=eps)
    default, given, other = (
        Square(threat=threat, n_queries=60, p_init=p).run(victim, x, y) for p in (None, p_init, 0.9 - p_init)
    )
    assert torch.equal(default.x_adv, given.x_adv) and torch.equal(default.queries, given.queries)
    assert not torch.equal(default.x_adv, other.x_adv)


@pytest.mark.parametrize(("norm", "eps", "loss"), [("linf", 0.1, "margin"), ("l2", 0.5, "margin"), ("linf", 0.1, "ce")])
def test_ball_bounds_and_query_records(
    digits: tuple[Victim, Tensor, Tensor], norm: str, eps: float, loss: Literal["margin", "ce"]
) -> None:
    victim, x, y = digits
    _check_run(victim, x, y, Square(threat=ThreatModel(norm=norm, eps=eps), n_queries=60, loss=loss), budget=60)


def test_linf_redraws_signs_that_would_not_change_the_window() -> None:
    """Over a uniform window the candidate's signs are uniform over the 2^C - 1 vectors that change it."""
    m, c, h = 7000, 3, 8
    pos = torch.ones(m, c, h, h, dtype=torch.bool)  # every pixel at +eps: drawing all + would change nothing
    x = torch.full((m, c, h, h), 0.5)
    st = {"state": pos, "xp": x + 0.1, "xm": x - 0.1}
    grid = (torch.arange(h), torch.arange(h))
    cand, x_new = Square()._linf_step(st, 0.14, make_generator(0), grid)  # 3x3 windows
    assert torch.equal(x_new, torch.where(cand, st["xp"], st["xm"]))
    changed = cand != pos
    assert int(changed.flatten(1).sum(1).min()) > 0  # every candidate changes its image
    assert set(changed.sum((2, 3)).unique().tolist()) <= {0, 9}  # ... by whole channels of one 3x3 window
    codes = (~cand).flatten(2).any(2).long() @ torch.tensor([1, 2, 4])  # which channels turned to -eps
    counts = torch.bincount(codes, minlength=8)
    assert counts[0] == 0 and torch.all((counts[1:] > 850) & (counts[1:] < 1150))


def test_query_budget_of_the_threat_model(digits: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = digits
    threat = ThreatModel(norm="linf", eps=0.1, max_queries=50)
    _check_run(victim, x, y, Square(threat=threat), budget=50)  # n_queries=5000 but the oracle allows 50
    # restarts share the budget: 30 + 20 queries, and never one past it
    _check_run(victim, x, y, Square(threat=threat, n_queries=30, n_restarts=3), budget=50)


def test_restarts_spend_their_budget_each(digits: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = digits
    _check_run(victim, x, y, Square(threat=ThreatModel(norm="l2", eps=0.5), n_queries=20, n_restarts=2), budget=40)


def test_same_seed_same_numbers(digits: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = digits
    runs = [Square(threat=ThreatModel(norm=n, eps=e), n_queries=40, seed=s) for n, e, s in [("linf", 0.1, 3)] * 2]
    runs += [Square(threat=ThreatModel(norm="l2", eps=0.5), n_queries=40, seed=3) for _ in range(2)]
    a, b, c, d = (attack.run(victim, x, y) for attack in runs)
    for u, v in [(a, b), (c, d)]:
        assert torch.equal(u.x_adv, v.x_adv) and torch.equal(u.queries, v.queries)
        assert u.extra == v.extra
    other = Square(threat=ThreatModel(norm="linf", eps=0.1), n_queries=40, seed=4).run(victim, x, y)
    assert not torch.equal(a.x_adv, other.x_adv)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0)])
def test_beats_random_noise_with_the_same_budget(digits: tuple[Victim, Tensor, Tensor], norm: str, eps: float) -> None:
    victim, x, y = digits
    budget = 150
    r = Square(threat=ThreatModel(norm=norm, eps=eps), n_queries=budget).run(victim, x, y)
    gen = make_generator(1)
    fooled = victim.predict(x) != y
    for _ in range(budget):  # random search: fooled when any of `budget` draws of the same norm fools it
        if norm == "linf":
            noise = eps * (torch.randint(0, 2, x.shape, generator=gen) * 2.0 - 1)
        else:
            noise = torch.randn(x.shape, generator=gen)
            noise = eps * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        fooled |= victim.predict((x + noise).clamp(0, 1)) != y
    random_accuracy = 1 - float(fooled.float().mean())
    assert r.robust_accuracy <= random_accuracy - 0.15


def test_targeted_hits_the_target(digits: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = digits
    target = (y + 1) % 10
    attack = Square(threat=ThreatModel(norm="linf", eps=0.4, targeted=True), n_queries=300)
    r = attack.run(victim, x, y, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert float((r.y_adv == target)[attacked].float().mean()) >= 0.8
    first = torch.tensor(r.extra["first_success_query"])[attacked]
    assert torch.equal(r.queries[attacked][first >= 0], first[first >= 0])


def test_progress_events(digits: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = digits
    events: list[ProgressEvent] = []
    Square(threat=ThreatModel(norm="linf", eps=0.02), n_queries=120).run(victim, x, y, progress=events.append)
    assert [(e.task, e.completed, e.total) for e in events] == [("square", k, 119) for k in (50, 100, 119)]


def test_colour_non_square_images() -> None:
    """Three channels (the sign redraw over channels) and H != W (windows and the L2 tiling)."""
    seed_everything(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 10, 4))
    victim = Victim(model, input_shape=(3, 6, 10))
    x = torch.rand(16, 3, 6, 10, generator=make_generator(0))
    y = victim.predict(x)
    for norm, eps in [("linf", 0.05), ("l2", 0.3)]:
        r = Square(threat=ThreatModel(norm=norm, eps=eps), n_queries=30).run(victim, x, y)
        assert float((r.linf if norm == "linf" else r.l2).max()) <= eps + TOL
        attacked = r.clean_correct
        first = torch.tensor(r.extra["first_success_query"])[attacked]
        assert torch.all(r.queries[attacked][first < 0] == 30)
        assert torch.equal(r.queries[attacked][first >= 0], first[first >= 0])


def test_query_curve_matches_first_success(digits: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = digits
    r = Square(threat=ThreatModel(norm="linf", eps=0.3), n_queries=300).run(victim, x, y)
    curve = r.extra["query_curve"]
    first = torch.tensor(r.extra["first_success_query"])[r.clean_correct]
    assert curve["budgets"][-1] >= int(r.queries.max()) and "median_dist" not in curve
    for b, rate in zip(curve["budgets"], curve["success_rate"], strict=True):
        assert rate == pytest.approx(float(((first >= 0) & (first <= b)).float().mean()))
    assert curve["success_rate"] == sorted(curve["success_rate"])
    assert curve["success_rate"][-1] == pytest.approx(r.success_rate)
