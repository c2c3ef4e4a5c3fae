"""CGBA and CGBA-H: the geometry, label-only access, budgets and query accounting, and the paper's claim at
small scale (a smaller median L2 than a plain boundary walk at an equal budget on digits)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion import CGBA, CGBAH, _cgba_geometry
from bastion.attacks.evasion._cgba_geometry import low_frequency, rotate, subspace_factor
from bastion.attacks.evasion.base import EvasionAttack
from bastion.core import Victim
from bastion.core.errors import ConfigError
from bastion.core.ops import dct_matrix
from bastion.core.random import make_generator
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.threat import ThreatModel
from bastion.data import Dataset

TOL = 2.0**-23
N = 16
LARGE = ThreatModel(norm="l2", eps=100.0)  # the projection cuts nothing: minimal norms
# 8x8 digits: the tests force f = 2 (a 4x4 block of frequencies), the setting their figures were measured with;
# the default for images under 28 pixels is the full space (f = 1)
DIGITS = {"dim_reduction": 2.0}


@pytest.fixture(scope="module")
def batch(digits_model: nn.Module, digits_data: Dataset) -> tuple[Victim, Tensor, Tensor]:
    """The digits model and N test images it classifies correctly."""
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:64], digits_data.y_test[:64]
    ok = victim.predict(x) == y
    return victim, x[ok][:N], y[ok][:N]


@pytest.fixture(scope="module")
def runs(batch: tuple[Victim, Tensor, Tensor]) -> dict[str, AttackResult]:
    """CGBA and CGBA-H with 250 queries per sample, minimal-norm setting."""
    victim, x, y = batch
    attacks: dict[str, EvasionAttack] = {
        "cgba": CGBA(threat=LARGE, n_queries=250, **DIGITS),
        "cgba-h": CGBAH(threat=LARGE, n_queries=250, **DIGITS),
    }
    return {name: a.run(victim, x, y) for name, a in attacks.items()}


def test_registered_and_validated() -> None:
    for name, cls in (("cgba", CGBA), ("cgba-h", CGBAH)):
        assert ATTACKS.get(name) is cls
        assert cls.access == "label" and cls.norms == ("l2",) and cls.targeted_ok
        with pytest.raises(ConfigError, match="l2"):
            cls(threat=ThreatModel(norm="linf", eps=0.1))
        with pytest.raises(ConfigError, match="n0"):
            cls(threat=LARGE, n0=0)
        with pytest.raises(ConfigError, match="dim_reduction"):
            cls(threat=LARGE, dim_reduction=0.5)
        with pytest.raises(ConfigError, match="tol"):
            cls(threat=LARGE, tol=0.0)


def test_dct_basis_is_orthonormal_and_low_frequency_is_its_inverse() -> None:
    for n in (1, 5, 8):
        d = dct_matrix(n)
        assert torch.allclose(d @ d.T, torch.eye(n), atol=1e-5)
        assert torch.allclose(d[0], torch.full((n,), 1 / math.sqrt(n)))
    z = torch.zeros(1, 1, 2, 3)
    z[0, 0, 1, 2] = 1.0
    img = low_frequency(z, 8, 6)
    assert torch.allclose(img[0, 0], torch.outer(dct_matrix(8)[1], dct_matrix(6)[2]), atol=1e-6)
    assert float(img.norm()) == pytest.approx(1.0, abs=1e-5)  # orthonormal: norms are kept


def test_rotate_turns_v_toward_eta_by_phi() -> None:
    gen = make_generator(0)
    v = torch.nn.functional.normalize(torch.randn(5, 10, generator=gen), dim=1)
    eta = torch.nn.functional.normalize(torch.randn(5, 10, generator=gen), dim=1)
    theta = torch.acos((v * eta).sum(1))
    for frac in (0.5, 0.125, 1.0):
        phi = theta * frac
        zeta = rotate(eta, v, theta, phi)
        assert torch.allclose(zeta.norm(dim=1), torch.ones(5), atol=1e-5)
        assert torch.allclose((zeta * v).sum(1), torch.cos(phi), atol=1e-5)  # at angle phi from v
        assert torch.allclose((zeta * eta).sum(1), torch.cos(theta - phi), atol=1e-5)  # toward eta, in the plane
    assert torch.allclose(rotate(eta, v, theta, theta), eta, atol=1e-5)


def test_default_subspace_depends_on_the_image_size() -> None:
    """The largest integer f <= 4 (the reference's, for 224 x 224) keeping >= 14 frequencies along the shorter side."""
    assert subspace_factor(28, 28) == 2  # mnist5k: 14 x 14 of 28 x 28
    assert subspace_factor(32, 32) == 2  # CIFAR: 16 x 16
    assert subspace_factor(224, 224) == 4  # ImageNet: the reference's 56 x 56
    assert subspace_factor(8, 8) == 1  # digits: the full space
    assert [subspace_factor(s, s) for s in (27, 41, 42, 55, 56, 512)] == [1, 2, 3, 3, 4, 4]
    assert subspace_factor(224, 30) == 2  # the shorter side decides
    for cls in (CGBA, CGBAH):
        assert cls(threat=LARGE).dim_reduction is None
        assert cls(threat=LARGE).factor(28, 28) == 2 and cls(threat=LARGE).factor(224, 224) == 4
        assert cls(threat=LARGE, dim_reduction=4).factor(28, 28) == 4  # an explicit f wins
        assert cls(threat=LARGE, dim_reduction=1.5).factor(224, 224) == 1.5


@pytest.mark.parametrize("cls", [CGBA, CGBAH])
def test_the_estimate_draws_from_the_chosen_subspace(
    cls: type[CGBA], mnist_model: nn.Module, mnist_data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 28 x 28 inputs the directions fill the top-left 14 x 14 DCT block by default, 7 x 7 with f = 4."""
    blocks: list[tuple[int, ...]] = []
    original = _cgba_geometry.low_frequency

    def spy(z: Tensor, h: int, w: int) -> Tensor:
        blocks.append((*z.shape[1:], h, w))
        return original(z, h, w)

    monkeypatch.setattr(_cgba_geometry, "low_frequency", spy)
    victim = Victim(mnist_model, input_shape=(1, 28, 28))
    x, y = mnist_data.x_test[:4], mnist_data.y_test[:4]
    for f, side in ((None, 14), (4.0, 7)):
        blocks.clear()
        r = cls(threat=LARGE, n_iter=2, n0=5, n_queries=300, dim_reduction=f).run(victim, x, y)
        assert set(blocks) == {(1, side, side, 28, 28)}
        assert r.extra["dim_reduction"] == 28 / side


def _capture_oracle_output(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = Victim.oracle

    def spy(self: Victim, n: int, **kw: Any) -> Any:
        seen.append(kw["output"])
        return original(self, n, **kw)

    monkeypatch.setattr(Victim, "oracle", spy)
    return seen


@pytest.mark.parametrize("cls", [CGBA, CGBAH])
def test_label_only_and_budgets_never_exceeded(
    cls: type[CGBA], batch: tuple[Victim, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    victim, x, y = batch
    seen = _capture_oracle_output(monkeypatch)
    # the oracle's budget binds (120 < n_queries), then the attack's own (90 < max_queries)
    for n_queries, max_queries, cap in ((1000, 100, 100), (60, 500, 60)):
        threat = ThreatModel(norm="l2", eps=100.0, max_queries=max_queries)
        r = cls(threat=threat, n_queries=n_queries, **DIGITS).run(victim, x, y)
        assert int(r.queries.max()) <= cap
        assert int(r.queries.min()) >= cap - 1  # a long run spends its budget (bisections may end one short)
        parts = sum(r.extra[f"queries_{k}"] for k in ("init", "estimate", "search", "final"))
        assert parts == int(r.queries.sum())
    assert seen == ["label", "label"]


def test_queries_add_up_to_the_schedule(batch: tuple[Victim, Tensor, Tensor]) -> None:
    """Per iteration t: floor(n0 sqrt(t + 1)) estimation queries per sample, then the search's probes."""
    victim, x, y = batch
    r = CGBAH(threat=LARGE, n_iter=3, n0=10, n_queries=10_000, **DIGITS).run(victim, x, y)
    assert r.extra["iterations"] == 3
    assert r.extra["queries_estimate"] == N * (10 + 14 + 17)
    assert r.extra["queries_final"] == N  # one check per sample
    assert r.extra["queries_search"] >= N * 3 * 2  # at least one probe and one bisection step per iteration
    assert bool(r.success.all())


@pytest.mark.parametrize("name", ["cgba", "cgba-h"])
def test_results_stay_adversarial_and_the_curve_falls(
    name: str, runs: dict[str, AttackResult], batch: tuple[Victim, Tensor, Tensor]
) -> None:
    victim = batch[0]
    r = runs[name]
    assert bool(r.success.all())  # measured by run(): every output is adversarial
    assert torch.equal(r.y_adv, victim.predict(r.x_adv))
    assert int(r.queries.max()) <= 250
    curve = [m for m in r.extra["query_curve"]["median_dist"] if m is not None]
    assert curve[-1] < 0.6 * curve[0]  # ... and falls well below the starting distance
    dist = torch.tensor([row[-1] for row in r.extra["dist_at_budget"]])
    assert torch.allclose(r.l2, dist, atol=1e-4)  # the output is the best point of the trace (+2 tol)


def test_a_larger_budget_extends_the_same_path(
    batch: tuple[Victim, Tensor, Tensor], runs: dict[str, AttackResult]
) -> None:
    """Each sample's draws do not depend on the budget: a 150-query run is the start of the 250-query run."""
    victim, x, y = batch
    short, long = CGBA(threat=LARGE, n_queries=150, **DIGITS).run(victim, x, y), runs["cgba"]
    k = sum(b < 150 for b in short.extra["query_curve"]["budgets"])
    assert [row[:k] for row in short.extra["dist_at_budget"]] == [row[:k] for row in long.extra["dist_at_budget"]]
    assert float(long.l2.median()) <= float(short.l2.median()) + 1e-6
    # with a finite eps: inside the ball, success measured, and far more than random noise of that norm finds
    eps = 1.0
    r = CGBA(threat=ThreatModel(norm="l2", eps=eps), n_queries=150, **DIGITS).run(victim, x, y)
    assert float(r.l2.max()) <= eps * (1 + TOL) + TOL
    assert torch.equal(r.success, victim.predict(r.x_adv) != y)
    assert torch.equal(r.success, short.l2 <= eps)  # the same path: adversarial within eps iff it got there
    assert 0 < int(r.success.sum()) < N  # the settings leave both kinds
    gen = make_generator(1)
    fooled = torch.zeros(N, dtype=torch.bool)
    for _ in range(150):  # as many Gaussian directions of L2 norm eps per image as the attack's queries
        u = torch.randn(x.shape, generator=gen)
        fooled |= victim.predict((x + eps * u / u.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)) != y
    assert int(r.success.sum()) >= int(fooled.sum()) + N // 4


def test_same_seed_same_numbers(batch: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = batch
    x, y = x[:8], y[:8]
    a, b = (CGBAH(threat=LARGE, n_queries=120, seed=5, **DIGITS).run(victim, x, y) for _ in range(2))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries) and a.extra == b.extra
    c = CGBAH(threat=LARGE, n_queries=120, seed=6, **DIGITS).run(victim, x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


def _boundary_walk(victim: Victim, x: Tensor, y: Tensor, budget: int) -> Tensor:
    """A plain boundary walk with `budget` label queries per image (its L2 distances (N,)): uniform noise until
    adversarial, 20 bisection steps toward x, then random steps of 10% of the distance pulled 5% toward x,
    kept when adversarial and closer (Brendel et al.'s Boundary Attack with fixed step sizes)."""
    gen, n, spent = make_generator(0), x.shape[0], 0
    start, found = x.clone(), torch.zeros(n, dtype=torch.bool)
    while not bool(found.all()) and spent < budget:
        u = torch.rand(x.shape, generator=gen)
        adv = (victim.predict(u) != y) & ~found
        start[adv], found, spent = u[adv], found | adv, spent + 1
    lo, hi = torch.zeros(n, 1, 1, 1), torch.ones(n, 1, 1, 1)
    for _ in range(20):
        mid = (lo + hi) / 2
        adv = (victim.predict(x + mid * (start - x)) != y).view(-1, 1, 1, 1)
        lo, hi, spent = torch.where(adv, lo, mid), torch.where(adv, mid, hi), spent + 1
    best = x + hi * (start - x)
    while spent < budget:
        d = best - x
        r = d.flatten(1).norm(dim=1)
        u = torch.randn(x.shape, generator=gen)
        u = u / u.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        p = (x + (d + 0.1 * r.view(-1, 1, 1, 1) * u) * 0.95).clamp(0, 1)
        keep = (victim.predict(p) != y) & ((p - x).flatten(1).norm(dim=1) < r)
        best[keep], spent = p[keep], spent + 1
    return (best - x).flatten(1).norm(dim=1)


def test_smaller_median_l2_than_a_boundary_walk(
    batch: tuple[Victim, Tensor, Tensor], runs: dict[str, AttackResult]
) -> None:
    """The paper's claim in small: at 250 queries per image on digits, CGBA's median L2 is well below a plain
    boundary walk's (measured 0.92 against 1.32). Against HSJA at equal budgets the two are within noise of
    each other on these images (0.92 against 0.99 at 250 queries), so no test claims an order there; see
    docs/attacks.md for the mnist5k numbers."""
    victim, x, y = batch
    walk = float(_boundary_walk(victim, x, y, 250).median())
    for name in ("cgba", "cgba-h"):
        assert bool(runs[name].success.all())
        assert float(runs[name].l2.median()) < 0.8 * walk


def test_targeted_starts_from_an_image_of_the_target_class(batch: tuple[Victim, Tensor, Tensor]) -> None:
    victim, x, y = batch
    t = y.roll(1)  # each target is the label of another image of the batch
    t = torch.where(t == y, (y + 1) % 10, t)
    has_start = (y[None, :] == t[:, None]).any(1)
    threat = ThreatModel(norm="l2", eps=100.0, targeted=True)
    r = CGBAH(threat=threat, n_queries=120, init_tries=5, **DIGITS).run(victim, x, y, target_labels=t)
    assert bool(r.success[has_start].all())
    assert torch.equal(r.success, victim.predict(r.x_adv) == t)
    start = torch.cdist(x.flatten(1), x.flatten(1)).masked_fill(y[None, :] != t[:, None], math.inf).min(1).values
    assert bool((r.l2[has_start] < start[has_start]).all())  # closer than the target image it started from
