"""Sign-OPT: query accounting and budgets, label-only access, minimal norms and the paper's claims at small scale."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks.evasion import sign_opt
from bastion.attacks.evasion.sign_opt import SignOPT
from bastion.core import Victim
from bastion.core.errors import ConfigError, DataError
from bastion.core.progress import ProgressEvent
from bastion.core.random import make_generator, seed_everything
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.threat import ThreatModel
from bastion.data import Dataset

N = 16
BIG = 1e3  # an eps no result reaches: the projection leaves it alone and l2 is the minimal norm found


def _threat(eps: float = BIG, **kw: object) -> ThreatModel:
    return ThreatModel(norm="l2", eps=eps, **kw)  # type: ignore[arg-type]


class _Counting(nn.Module):
    """Counts the rows the wrapped model answers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.model(x)


@pytest.fixture(scope="module")
def runs(digits_model: nn.Module, digits_data: Dataset) -> dict[int, AttackResult]:
    """Minimal-norm runs on the first N test digits at three budgets, same seed."""
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    return {b: SignOPT(threat=_threat(), n_queries=b, seed=1).run(victim, x, y) for b in (150, 600)}


def test_registered_and_validated() -> None:
    assert ATTACKS.get("sign-opt") is SignOPT
    assert SignOPT.access == "label" and SignOPT(threat=_threat())._oracle_output() == "label"
    with pytest.raises(ConfigError, match="l2"):
        SignOPT(threat=ThreatModel(norm="linf", eps=0.1))
    with pytest.raises(ConfigError, match="k must be >= 1"):
        SignOPT(threat=_threat(), k=0)
    with pytest.raises(ConfigError, match="beta"):
        SignOPT(threat=_threat(), beta=0.0)


def test_init_pool_is_checked(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:4], digits_data.y_test[:4]
    t = (y + 1) % 10
    with pytest.raises(DataError, match="init_pool must be images"):
        SignOPT(threat=_threat(targeted=True), init_pool=torch.rand(4, 1, 7, 7)).run(
            digits_victim, x, y, target_labels=t
        )
    with pytest.raises(DataError, match="bounds"):
        SignOPT(threat=_threat(targeted=True), init_pool=torch.rand(4, 1, 8, 8) + 1).run(
            digits_victim, x, y, target_labels=t
        )


def test_every_query_is_counted_and_the_budget_holds(digits_model: nn.Module, digits_data: Dataset) -> None:
    counting = _Counting(digits_model)
    victim = Victim(counting, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:N], digits_data.y_test[:N]
    for threat, n_queries, budget in [(_threat(max_queries=130), 4000, 130), (_threat(), 90, 90)]:
        counting.rows = 0
        r = SignOPT(threat=threat, n_queries=n_queries, k=50, n_init=20).run(victim, x, y)
        # the model answered the clean batch, the attack's queries and the final check: nothing else
        assert counting.rows == 2 * N + int(r.queries.sum())
        attacked = r.clean_correct
        assert torch.all(r.queries[~attacked] == 0)
        assert int(r.queries.max()) <= budget
        assert int(r.queries[attacked].min()) >= budget - 1  # a sample stops with fewer than 2 queries left


def test_label_only(digits_victim: Victim, digits_data: Dataset) -> None:
    """Output defenses that keep the argmax change nothing: the attack sees labels and nothing else."""
    x, y = digits_data.x_test[:6], digits_data.y_test[:6]
    attack = SignOPT(threat=_threat(), n_queries=100, k=30, n_init=10)
    plain = attack.run(digits_victim, x, y)

    def one_hot(logits: Tensor, x: Tensor) -> Tensor:
        return nn.functional.one_hot(logits.argmax(1), logits.shape[1]).float() * 3.0 - 7.0

    hidden = attack.run(digits_victim, x, y, postprocess=[one_hot])
    assert torch.equal(plain.x_adv, hidden.x_adv) and torch.equal(plain.queries, hidden.queries)


def test_results_are_adversarial_and_traced(runs: dict[int, AttackResult]) -> None:
    for r in runs.values():
        attacked = r.clean_correct
        assert bool(r.success[attacked].all())
        assert torch.equal(r.success[attacked], r.y_adv[attacked] != r.y[attacked])
        curve = r.extra["query_curve"]
        med = curve["median_dist"]
        assert curve["budgets"][-1] >= int(r.queries.max()) and curve["success_rate"][-1] == 1.0
        known = [v for v in med if v is not None]
        assert known == sorted(known, reverse=True)  # the best distance never grows with the budget
        assert med[-1] == pytest.approx(float(r.l2[attacked].double().quantile(0.5)), rel=1e-5)


def test_median_l2_falls_with_the_budget(runs: dict[int, AttackResult]) -> None:
    medians = [float(runs[b].l2[runs[b].clean_correct].median()) for b in sorted(runs)]
    assert medians == sorted(medians, reverse=True)
    assert medians[-1] <= 0.8 * medians[0]  # the gradient steps, not only the start, shrink the norm


def test_beats_random_noise_with_the_same_budget(
    runs: dict[int, AttackResult], digits_victim: Victim, digits_data: Dataset
) -> None:
    """At eps = its own median L2 after 600 queries, Sign-OPT fools half the digits; 600 draws of
    random-direction noise of that norm fool far fewer."""
    r = runs[600]
    attacked = r.clean_correct
    x, y = digits_data.x_test[:N][attacked], r.y[attacked]
    eps = float(r.l2[attacked].median())
    noise = torch.randn((600, *x.shape), generator=make_generator(1))  # (600, M, 1, 8, 8)
    noise = eps * noise / noise.flatten(2).norm(dim=2)[..., None, None, None]
    labels = digits_victim.predict((x[None] + noise).clamp(0, 1).flatten(0, 1)).view(600, -1)
    fooled = (labels != y[None]).any(dim=0)
    attack_rate = float((r.l2[attacked] <= eps).float().mean())
    assert attack_rate >= 0.5
    assert float(fooled.float().mean()) <= attack_rate - 0.3


def test_same_seed_same_numbers(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:6], digits_data.y_test[:6]
    a, b, c = (
        SignOPT(threat=_threat(), n_queries=80, k=25, n_init=10, seed=s).run(digits_victim, x, y) for s in (5, 5, 6)
    )
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries) and a.extra == b.extra
    assert not torch.equal(a.x_adv, c.x_adv)


def test_a_sample_does_not_depend_on_its_batch(digits_victim: Victim, digits_data: Dataset) -> None:
    """Each sample has its own generator, state and budget: alone or in a batch, the same result."""
    x, y = digits_data.x_test[:5], digits_data.y_test[:5]
    attack = SignOPT(threat=_threat(), n_queries=100, k=30, n_init=10, seed=2)
    whole = attack.run(digits_victim, x, y)
    for i in (0, 3):
        alone = attack.run(digits_victim, x[i : i + 1], y[i : i + 1])
        assert torch.allclose(alone.x_adv[0], whole.x_adv[i], atol=1e-6)
        assert int(alone.queries[0]) == int(whole.queries[i])


def test_estimates_in_chunks_give_the_same_result(
    digits_victim: Victim, digits_data: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gradient estimate too large for one query goes in groups of samples, with the same draws."""
    x, y = digits_data.x_test[:5], digits_data.y_test[:5]
    attack = SignOPT(threat=_threat(), n_queries=100, k=30, n_init=10, seed=4)
    whole = attack.run(digits_victim, x, y)
    monkeypatch.setattr(sign_opt, "_PROBE_FLOATS", 64 * 40)  # one sample's 30 probes per query
    chunked = attack.run(digits_victim, x, y)
    assert torch.allclose(whole.x_adv, chunked.x_adv, atol=1e-6) and torch.equal(whole.queries, chunked.queries)


def test_stop_at_eps_saves_queries(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:6], digits_data.y_test[:6]
    threat = _threat(eps=2.5)
    full = SignOPT(threat=threat, n_queries=150, k=30, n_init=20).run(digits_victim, x, y)
    quick = SignOPT(threat=threat, n_queries=150, k=30, n_init=20, stop_at_eps=True).run(digits_victim, x, y)
    attacked = full.clean_correct
    assert torch.equal(quick.success, full.success) and int(quick.success[attacked].sum()) >= 4
    assert int(quick.queries.sum()) < int(full.queries.sum()) // 2


def test_linear_model_known_distance() -> None:
    """For a two-class linear model the smallest L2 perturbation is |z_0 - z_1| / ||w_0 - w_1|| (when
    the closest boundary point lies inside the box): Sign-OPT's g approaches it and never beats it."""
    seed_everything(0)
    linear = nn.Linear(64, 2)
    victim = Victim(nn.Sequential(nn.Flatten(), linear), input_shape=(1, 8, 8))
    x = 0.5 + 0.05 * torch.randn(6, 1, 8, 8, generator=make_generator(0))
    y = victim.predict(x)
    normal = linear.weight[1].detach() - linear.weight[0].detach()  # (64,)
    z = victim.logits(x)
    true = (z[:, 1] - z[:, 0]).abs() / normal.norm()  # (6,)
    closest = x.flatten(1) - (2 * y[:, None] - 1) * true[:, None] * normal / normal.norm()
    assert float(closest.min()) > 0 and float(closest.max()) < 1  # the box does not bind
    r = SignOPT(threat=_threat(), n_queries=2000).run(victim, x, y)
    assert bool(r.success.all())
    ratio = r.l2 / true
    assert torch.all(ratio >= 1 - 1e-4) and torch.all(ratio <= 1.1), ratio
    assert float(ratio.median()) <= 1.01
    col = r.extra["query_curve"]["budgets"].index(250)
    start = torch.tensor([row[col] for row in r.extra["dist_at_budget"]]) / true  # best distance after 250
    assert torch.all(start > ratio) and float(start.median()) > 1.2, start  # the steps, not the start, get there


def test_targeted_hits_the_target(digits_victim: Victim, digits_data: Dataset) -> None:
    """Every sample whose target class the model sees among the other attacked inputs starts from one
    and ends on the target; the others are reported, not attacked."""
    x, y = digits_data.x_test[:24], digits_data.y_test[:24]
    target = (y + 1) % 10
    attack = SignOPT(threat=_threat(targeted=True), n_queries=200, k=50)
    r = attack.run(digits_victim, x, y, target_labels=target)
    attacked = r.clean_correct & (target != y)
    pred, t = digits_victim.predict(x)[attacked], target[attacked]
    others = ~torch.eye(t.shape[0], dtype=torch.bool)
    startable = ((pred[None, :] == t[:, None]) & others).any(dim=1)  # (M,) a target-class image to start from
    assert int(startable.sum()) >= 10
    assert torch.equal(r.success[attacked], startable)
    assert torch.equal(r.y_adv[attacked][startable], t[startable])
    missed = int((~startable).sum())
    assert missed == 0 or any(f"{missed} sample(s)" in w for w in r.warnings)
    assert int(r.queries.max()) <= 200


def test_targeted_from_a_pool(digits_victim: Victim, digits_data: Dataset) -> None:
    """With `init_pool` (here training images), every sample starts from an image of its target."""
    x, y = digits_data.x_test[:8], digits_data.y_test[:8]
    target = (y + 3) % 10
    attack = SignOPT(threat=_threat(targeted=True), n_queries=150, k=30, n_init=20, init_pool=digits_data.x_train[:200])
    r = attack.run(digits_victim, x, y, target_labels=target)
    attacked = r.clean_correct & (target != y)
    assert not r.warnings and torch.equal(r.y_adv[attacked], target[attacked])
    assert int(r.queries.max()) <= 150


def test_untargeted_from_a_pool(digits_victim: Victim, digits_data: Dataset) -> None:
    """An untargeted run given `init_pool` starts from its images instead of noise: with one pool image,
    the samples of another class end no farther than it; those of its own class get no start."""
    x, y = digits_data.x_test[:12], digits_data.y_test[:12]
    pool = digits_data.x_train[:1]
    r = SignOPT(threat=_threat(), n_queries=60, k=10, init_pool=pool).run(digits_victim, x, y)
    attacked = r.clean_correct
    other = attacked & (y != digits_victim.predict(pool)[0])
    assert int(other.sum()) >= 5 and int((attacked & ~other).sum()) >= 1
    assert bool(r.success[other].all()) and not bool(r.success[attacked & ~other].any())
    assert bool((r.l2[other] <= (pool - x[other]).flatten(1).norm(dim=1) + 1e-4).all())
    assert any("init_pool" in w for w in r.warnings)


def test_targeted_without_target_images_warns(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:8], digits_data.y_test[:8]
    keep = y != 9  # no image of class 9 in the batch: nothing to start a targeted attack on class 9 from
    x, y = x[keep], y[keep]
    target = torch.full_like(y, 9)
    r = SignOPT(threat=_threat(targeted=True), n_queries=50, n_init=20).run(digits_victim, x, y, target_labels=target)
    assert any("target" in w for w in r.warnings)
    assert not bool(r.success.any()) and torch.equal(r.x_adv, x)


def test_progress_events(digits_victim: Victim, digits_data: Dataset) -> None:
    x, y = digits_data.x_test[:3], digits_data.y_test[:3]
    events: list[ProgressEvent] = []
    SignOPT(threat=_threat(), n_queries=120, k=40, n_init=10).run(digits_victim, x, y, progress=events.append)
    assert events and all(e.task == "sign-opt" and e.total == 120 for e in events)
    done = [e.completed for e in events]
    assert done == sorted(done) and done[-1] == 120
