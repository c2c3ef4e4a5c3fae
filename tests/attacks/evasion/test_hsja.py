"""HopSkipJumpAttack: label-only access, budgets, the boundary walk, and the paper's claims at small scale."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion.hsja import HSJA
from bastion.core import Victim
from bastion.core.errors import ConfigError, DataError
from bastion.core.oracle import Oracle
from bastion.core.progress import ProgressEvent
from bastion.core.random import make_generator
from bastion.core.registry import ATTACKS
from bastion.core.threat import ThreatModel
from bastion.data import Dataset

N = 12
BIG = 100.0  # an eps the projection never cuts: the attack's own distances are measured


def _threat(norm: str = "l2", eps: float = BIG, **kw: object) -> ThreatModel:
    return ThreatModel(norm=norm, eps=eps, **kw)  # type: ignore[arg-type]


def _dist(r: object, norm: str) -> Tensor:
    return getattr(r, norm)


@pytest.fixture
def batch(digits_data: Dataset) -> tuple[Tensor, Tensor]:
    return digits_data.x_test[:N], digits_data.y_test[:N]


def test_registered_and_validated() -> None:
    assert ATTACKS.get("hsja") is HSJA
    assert HSJA.access == "label" and HSJA()._oracle_output() == "label"
    for bad in ({"steps": 0}, {"gamma": 0.0}, {"init_evals": 0}, {"n_queries": 0}, {"init_tries": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            HSJA(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="l2 and linf"):
        HSJA(threat=ThreatModel(norm="l0", eps=3))


def test_init_pool_is_checked(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    with pytest.raises(DataError, match="init_pool must be images"):
        HSJA(threat=_threat(), init_pool=torch.rand(4, 1, 7, 7)).run(digits_victim, x, y)
    with pytest.raises(DataError, match="bounds"):
        HSJA(threat=_threat(), init_pool=torch.rand(4, 1, 8, 8) + 1).run(digits_victim, x, y)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_labels_only_budgets_and_adversarial_results(
    digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oracle answers labels only; neither budget is ever passed (the oracle would raise); every
    attacked sample ends adversarial (re-measured) and spends nearly all of its budget."""
    x, y = batch
    seen: list[tuple[str, int]] = []
    query = Oracle.query

    def spy(self: Oracle, pts: Tensor, idx: Tensor | None = None) -> Tensor:
        out = query(self, pts, idx)
        seen.append((self.output, out.dim()))
        return out

    monkeypatch.setattr(Oracle, "query", spy)
    for threat_budget, own in [(150, None), (400, 120)]:
        attack = HSJA(threat=_threat(norm, max_queries=threat_budget), n_queries=own, seed=1)
        r = attack.run(digits_victim, x, y)
        budget = min(threat_budget, own or threat_budget)
        attacked = r.clean_correct
        assert int(r.queries.max()) <= budget and torch.all(r.queries[~attacked] == 0)
        assert torch.all(r.success[attacked]) and torch.equal(r.y_adv, digits_victim.predict(r.x_adv))
        # what is left is less than one iteration's bisection (9 or 12 probes here) plus a gradient probe
        assert int(r.queries[attacked].min()) >= budget - 14
    assert seen and all(out == ("label", 1) for out in seen)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_distance_falls_with_the_budget(digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str) -> None:
    """The median distance falls well below the start, and the result (the closest adversarial input
    found, adversarial on the model) matches the curve's last point, per sample and in the median."""
    x, y = batch
    r = HSJA(threat=_threat(norm), n_queries=300, seed=0).run(digits_victim, x, y)
    curve = r.extra["query_curve"]
    med = [v for v in curve["median_dist"] if v is not None]
    assert med[-1] <= 0.6 * med[0]
    attacked = r.clean_correct
    assert torch.all(digits_victim.predict(r.x_adv[attacked]) != y[attacked])
    for row, dist in zip(r.extra["dist_at_budget"], _dist(r, norm).tolist(), strict=True):
        if row[0] is None and row[-1] is None:
            continue
        got = [v for v in row if v is not None]
        assert dist == pytest.approx(got[-1], rel=1e-4)
    assert float(_dist(r, norm)[attacked].double().quantile(0.5)) == pytest.approx(med[-1], rel=1e-4)


def test_beats_random_noise_of_the_same_norm_and_budget(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    """Random Gaussian directions at each sample's HSJA distance, as many as HSJA's queries, fool few samples."""
    x, y = batch
    budget = 200
    r = HSJA(threat=_threat("l2"), n_queries=budget, seed=0).run(digits_victim, x, y)
    attacked = r.clean_correct
    assert torch.all(r.success[attacked])
    radius = r.l2.view(-1, 1, 1, 1)
    gen = make_generator(1)
    fooled = torch.zeros_like(attacked)
    for _ in range(budget):
        u = torch.randn(x.shape, generator=gen)
        fooled |= digits_victim.predict((x + radius * u / u.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)) != y
    assert float(fooled[attacked].float().mean()) <= 0.5


def test_same_seed_same_numbers(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    a, b = (HSJA(threat=_threat("linf"), n_queries=150, seed=3).run(digits_victim, x, y) for _ in range(2))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries) and a.extra == b.extra
    c = HSJA(threat=_threat("linf"), n_queries=150, seed=4).run(digits_victim, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_a_sample_does_not_depend_on_its_batch(digits_victim: Victim, batch: tuple[Tensor, Tensor], norm: str) -> None:
    """Each sample draws from its own generator (seeded by the run seed and its pixels) and keeps its own
    step, distance and budget: alone, in a batch, or in a shuffled batch, it gets the same result."""
    x, y = batch
    attack = HSJA(threat=_threat(norm), n_queries=200, seed=0)
    whole = attack.run(digits_victim, x, y)
    perm = torch.randperm(N, generator=make_generator(5))
    shuffled = attack.run(digits_victim, x[perm], y[perm])
    assert torch.allclose(shuffled.x_adv, whole.x_adv[perm], atol=1e-6)
    assert torch.equal(shuffled.queries, whole.queries[perm])
    for i in (0, 7):
        alone = attack.run(digits_victim, x[i : i + 1], y[i : i + 1])
        assert torch.allclose(alone.x_adv[0], whole.x_adv[i], atol=1e-6)
        assert int(alone.queries[0]) == int(whole.queries[i])


def _halfspace() -> tuple[Victim, Tensor, Tensor, Tensor]:
    """A linear two-class model on 8x8 inputs and 8 inputs near 0.5: the minimal distances are known."""
    gen = make_generator(0)
    w = torch.randn(64, generator=gen)
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([w, -w]) / 2)
        lin.bias.zero_()
    victim = Victim(nn.Sequential(nn.Flatten(), lin), input_shape=(1, 8, 8))
    x = 0.5 + 0.02 * torch.randn(8, 1, 8, 8, generator=gen)
    margin = (x.flatten(1) - 0.5) @ w + 0.5 * w.sum()  # logit gap z_0 - z_1 = w.x
    y = (margin < 0).long()
    return victim, x, y, margin.abs()


@pytest.mark.parametrize(("norm", "slack"), [("l2", 1.1), ("linf", 1.25)])
def test_reaches_the_minimal_distance_of_a_linear_model(norm: str, slack: float) -> None:
    """For w.x = 0 the closest adversarial input lies at |w.x| / ||w||_2 (L2) or |w.x| / ||w||_1 (L-inf)."""
    victim, x, y, margin = _halfspace()
    w = victim.model[1].weight[0].detach() * 2
    optimum = margin / (w.norm() if norm == "l2" else w.abs().sum())
    r = HSJA(threat=_threat(norm), n_queries=1000, seed=0).run(victim, x, y)
    assert torch.all(r.success)
    ratio = _dist(r, norm) / optimum
    assert float(ratio.min()) >= 1 - 1e-3 and float(ratio.median()) <= slack


def test_targeted_from_a_pool_hits_the_target(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    target = (y + 1) % 10
    pool = digits_data.x_train[:200]
    attack = HSJA(threat=_threat("l2", targeted=True), n_queries=300, init_pool=pool, seed=0)
    r = attack.run(digits_victim, x, y, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert torch.all(r.y_adv[attacked] == target[attacked]) and not r.warnings
    # the pool start is the nearest pool image of the target class; the walk then brings it much closer
    starts = torch.tensor([row[0] if row[0] is not None else math.inf for row in r.extra["dist_at_budget"]])
    assert float(r.l2[attacked].median()) <= 0.7 * float(starts[attacked].median())


def test_no_start_is_a_warning_and_the_clean_input(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    """Targeted, without a pool, one noise draw each: most samples find no start, keep x, and a warning says so."""
    x, y = batch
    target = (y + 1) % 10
    r = HSJA(threat=_threat("l2", targeted=True), init_tries=1, n_queries=50).run(
        digits_victim, x, y, target_labels=target
    )
    missed = r.clean_correct & (r.queries == 1)
    assert int(missed.sum()) > 0 and torch.equal(r.x_adv[missed], x[missed])
    assert len(r.warnings) == 1 and "init_pool" in r.warnings[0]


def test_stop_at_eps_saves_queries(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    full = HSJA(threat=_threat("l2", eps=2.0), n_queries=300).run(digits_victim, x, y)
    early = HSJA(threat=_threat("l2", eps=2.0), n_queries=300, stop_at_eps=True).run(digits_victim, x, y)
    assert int(early.queries.sum()) < int(full.queries.sum())
    assert torch.equal(early.success, full.success)  # the same samples get within 2.0, with fewer queries
    assert float(full.l2.max()) <= 2.0 + 1e-6  # the projection onto the eps-ball is the last step


def test_progress_events(digits_victim: Victim, batch: tuple[Tensor, Tensor]) -> None:
    x, y = batch
    events: list[ProgressEvent] = []
    HSJA(threat=_threat(), steps=3).run(digits_victim, x, y, progress=events.append)
    assert [(e.task, e.completed, e.total) for e in events] == [("hsja", k, 3) for k in (1, 2, 3)]
