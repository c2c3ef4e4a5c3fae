"""LiRA: the statistic is the logit of the confidence without its float32 underflow, every candidate is
in exactly half the shadows, the scores follow the reference's formulas (flags included), seeds
reproduce, and the proxy claim holds: on an overfitted `small_cnn`, online fixed-variance LiRA beats the
loss threshold at 1% FPR, and scores chance on shuffled membership labels."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from bastion.attacks.privacy import LiRA, LossThreshold, ShadowReference, logit_margin, shadow_membership
from bastion.attacks.privacy._shadows import shadow_statistics, train_shadows, views
from bastion.core import ConfigError, DataError, Victim, make_generator
from bastion.data import Dataset
from bastion.models import build_model
from bastion.train import TrainConfig, fit


def test_phi_is_the_logit_of_the_confidence() -> None:
    z = torch.randn(400, 10, generator=make_generator(0)) * 6  # float32, as a model answers
    y = torch.randint(0, 10, (400,), generator=make_generator(1))
    p = z.double().softmax(1)[torch.arange(400), y]
    direct = (p / (1 - p)).log()  # finite wherever 1 - p survives in float64
    phi = logit_margin(z, y)
    assert phi.dtype == torch.float64 and bool(torch.isfinite(direct).all())
    assert torch.allclose(phi, direct, rtol=1e-9, atol=1e-9)
    confident = torch.tensor([[60.0] + [0.0] * 9, [30.0, 20.0] + [0.0] * 8])
    p32 = confident.softmax(1)[:, 0]
    assert float(1 - p32[0]) == 0.0  # float32 rounds the member-like answer to certainty
    assert logit_margin(confident, torch.tensor([0, 0])).tolist() == pytest.approx(
        [60 - math.log(9), 30 - math.log(math.exp(20) + 8)], rel=1e-12
    )


def test_every_candidate_is_in_exactly_half_the_shadows() -> None:
    keep = shadow_membership(8, 1000, seed=0)
    assert keep.shape == (8, 1000) and keep.sum(dim=0).tolist() == [4] * 1000
    sizes = keep.sum(dim=1)
    assert len(set(sizes.tolist())) > 1 and bool((sizes - 500).abs().le(60).all())  # sizes vary around n/2
    assert torch.equal(shadow_membership(8, 1000, seed=0), keep)
    assert not torch.equal(shadow_membership(8, 1000, seed=1), keep)
    pairs = (keep[:, None, :] & keep[None, :, :]).sum(-1).double()  # co-membership: about n/4 off the diagonal
    assert bool(((pairs - 1000 * 3 / 14).abs() < 60).masked_select(~torch.eye(8, dtype=torch.bool)).all())
    with pytest.raises(ConfigError, match="even"):
        shadow_membership(7, 10, seed=0)
    with pytest.raises(ConfigError, match="even"):
        LiRA(shadows=5)


def _reference_scores(
    phi_ref: np.ndarray,
    keep: np.ndarray,
    phi: np.ndarray,
    *,
    online: bool,
    fixed: bool,
    shared_in: bool = False,
    two_sided: bool = False,
) -> np.ndarray:
    """The reference's scoring written out with numpy (`plot.py`), as a membership score (higher = member)."""
    from scipy.stats import norm

    cols_in = [phi_ref[keep[:, j], j, :] for j in range(phi_ref.shape[1])]
    cols_out = [phi_ref[~keep[:, j], j, :] for j in range(phi_ref.shape[1])]
    m_in, m_out = min(map(len, cols_in)), min(map(len, cols_out))
    dat_in = np.array([c[:m_in] for c in cols_in])  # (N, m, A)
    dat_out = np.array([c[:m_out] for c in cols_out])
    mu_in, mu_out = np.median(dat_in, 1), np.median(dat_out, 1)
    if online:
        sd_in = np.std(dat_in) if fixed else np.std(dat_in, 1)
        sd_out = (np.std(dat_in) if shared_in else np.std(dat_out)) if fixed else np.std(dat_out, 1)
        return (norm.logpdf(phi, mu_in, sd_in + 1e-30) - norm.logpdf(phi, mu_out, sd_out + 1e-30)).mean(1)
    sd_out = (np.std(dat_out) if fixed else np.std(dat_out, 1)) + 1e-30
    if two_sided:
        return -norm.logpdf(phi, mu_out, sd_out).mean(1)
    return norm.logcdf((phi - mu_out) / sd_out).mean(1)


class _Fixed(nn.Module):
    """Serves fixed logits: pixel (0, 0) of channel 0 indexes the row, the mirror flips column order."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.table = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(x[:, 0, 0, 0] * 100).round().long()]


@pytest.mark.parametrize(
    "settings",
    [
        {"online": True, "fixed_variance": False},
        {"online": True, "fixed_variance": True},
        {"online": True, "fixed_variance": True, "shared_in_std": True},
        {"online": False, "fixed_variance": False},
        {"online": False, "fixed_variance": True},
        {"online": False, "fixed_variance": False, "two_sided": True},
    ],
)
def test_scores_match_the_reference_formulas(settings: dict[str, bool]) -> None:
    gen = make_generator(0)
    n, s, k = 40, 6, 5
    x = (torch.arange(n, dtype=torch.float32) / 100).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    y = torch.randint(0, k, (n,), generator=gen)
    logits = torch.randn(n, k, generator=gen) * 4
    keep = torch.rand(s, n, generator=gen) < 0.5
    keep[0], keep[1] = True, False  # at least one IN and one OUT model per candidate; counts vary (truncation)
    phi_ref = torch.randn(s, n, 1, generator=gen, dtype=torch.float64) * 2 + keep[:, :, None] * 1.5
    attack = LiRA(shadows=6, augment="none", **settings)
    result = attack.run(
        Victim(_Fixed(logits)), x, y, torch.arange(n) < n // 2, reference=ShadowReference(phi_ref, keep)
    )
    phi = logit_margin(logits, y)[:, None].numpy()
    want = _reference_scores(
        phi_ref.numpy(),
        keep.numpy(),
        phi,
        online=settings["online"],
        fixed=settings["fixed_variance"],
        shared_in=settings.get("shared_in_std", False),
        two_sided=settings.get("two_sided", False),
    )
    assert np.allclose(result.scores.numpy(), want, rtol=1e-9, atol=1e-9)
    assert result.queries is not None and result.queries.tolist() == [1] * n


def test_flags_and_references_are_checked(digits_model: nn.Module, digits_data: Dataset) -> None:
    victim = Victim(digits_model, input_shape=(1, 8, 8))
    x, y = digits_data.x_test[:20], digits_data.y_test[:20]
    member = torch.arange(20) < 10
    with pytest.raises(ConfigError, match="shadow models"):
        LiRA().run(victim, x, y, member)
    with pytest.raises(ConfigError, match="no shadow models"):
        LossThreshold().run(
            victim, x, y, member, reference=ShadowReference(torch.zeros(2, 20, 1), member[None].repeat(2, 1))
        )
    with pytest.raises(ConfigError, match="offline"):
        LiRA(two_sided=True)
    with pytest.raises(ConfigError, match="fixed-variance"):
        LiRA(online=False, shared_in_std=True)
    keep = shadow_membership(2, 20, seed=0)
    two_views = ShadowReference(torch.zeros(2, 20, 2, dtype=torch.float64), keep)
    with pytest.raises(DataError, match="2 views"):
        LiRA(shadows=2, augment="none").run(victim, x, y, member, reference=two_views)
    with pytest.raises(DataError, match="covers 20 candidates"):
        LiRA(shadows=2, augment="none").run(victim, x[:10], y[:10], torch.arange(10) < 5, reference=two_views)


def test_mirror_queries_twice_and_auto_mirrors_colour_only() -> None:
    gray, colour = torch.rand(3, 1, 4, 4), torch.rand(3, 3, 4, 4)
    assert len(views(gray, "auto")) == 1 and len(views(colour, "auto")) == 2 and len(views(gray, "mirror")) == 2
    assert torch.equal(views(colour, "mirror")[1], colour.flip(-1))


# --- the proxy claim: pool 2,000 mnist5k images, a target and 8 shadows on random halves -------------

POOL, SHADOWS, EPOCHS = 2000, 8, 8


@dataclass(frozen=True)
class Proxy:
    victim: Victim
    x: torch.Tensor
    y: torch.Tensor
    member: torch.Tensor
    reference: ShadowReference


def _train(ds: Dataset, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = EPOCHS) -> nn.Module:
    """An overfitted `small_cnn`: no augmentation, no weight decay (the tests' overfit recipe)."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=10, in_channels=1, image_size=28, mean=ds.mean, std=ds.std)
    fit(model, x, y, TrainConfig(epochs=epochs, lr=3e-3, augment="none", seed=seed))
    return model.eval()


@pytest.fixture(scope="module")
def proxy(mnist_data: Dataset) -> Proxy:
    """The target trains on a seeded random half of the pool (its members); the shadows on the halves
    `shadow_membership` draws from the attack's seed, blind to the target's half."""
    x, y = mnist_data.x_train[:POOL], mnist_data.y_train[:POOL]
    member = torch.zeros(POOL, dtype=torch.bool)
    member[torch.randperm(POOL, generator=make_generator(123))[: POOL // 2]] = True
    target = _train(mnist_data, x[member], y[member], seed=1000)
    attack = LiRA(shadows=SHADOWS)
    reference = attack.fit(x, y, lambda xi, yi, i: _train(mnist_data, xi, yi, seed=i))
    return Proxy(Victim(target, input_shape=(1, 28, 28)), x, y, member, reference)


def test_online_fixed_variance_lira_beats_the_loss_threshold(proxy: Proxy) -> None:
    lira = LiRA(shadows=SHADOWS).run(proxy.victim, proxy.x, proxy.y, proxy.member, reference=proxy.reference)
    loss = LossThreshold().run(proxy.victim, proxy.x, proxy.y, proxy.member)
    assert proxy.reference.phi.shape == (SHADOWS, POOL, 1)  # auto: digits are not mirrored
    assert lira.auroc > 0.55 and lira.auroc > loss.auroc
    assert lira.tpr_at_fpr(0.01) > loss.tpr_at_fpr(0.01) + 0.02
    assert lira.queries is not None and lira.queries.tolist() == [1] * POOL


def test_shuffled_membership_labels_score_chance(proxy: Proxy) -> None:
    shuffled = proxy.member[torch.randperm(POOL, generator=make_generator(7))]
    for settings in ({}, {"online": False}, {"fixed_variance": False}):
        result = LiRA(shadows=SHADOWS, **settings).run(
            proxy.victim, proxy.x, proxy.y, shuffled, reference=proxy.reference
        )
        assert abs(result.auroc - 0.5) <= 0.03, settings


def test_same_seed_same_scores(proxy: Proxy, mnist_data: Dataset) -> None:
    first = LiRA(shadows=SHADOWS).run(proxy.victim, proxy.x, proxy.y, proxy.member, reference=proxy.reference)
    again = LiRA(shadows=SHADOWS).run(proxy.victim, proxy.x, proxy.y, proxy.member, reference=proxy.reference)
    assert torch.equal(first.scores, again.scores)
    # retraining two shadows from the same seeds and halves reads the same statistics back
    keep = proxy.reference.keep[:2]
    twice = train_shadows(
        proxy.x, proxy.y, keep, lambda xi, yi, i: _train(mnist_data, xi[:100], yi[:100], seed=i, epochs=1), "none"
    )
    thrice = train_shadows(
        proxy.x, proxy.y, keep, lambda xi, yi, i: _train(mnist_data, xi[:100], yi[:100], seed=i, epochs=1), "none"
    )
    assert torch.equal(twice.phi, thrice.phi) and torch.equal(twice.keep, keep)
    assert torch.equal(LiRA(shadows=SHADOWS).assign(POOL), proxy.reference.keep)
    assert not torch.equal(LiRA(shadows=SHADOWS, seed=1).assign(POOL), proxy.reference.keep)


def test_shadow_statistics_query_in_eval_mode(proxy: Proxy) -> None:
    model = proxy.victim.model
    model.train()
    ref = shadow_statistics([model], proxy.x[:50], proxy.y[:50], proxy.reference.keep[:1, :50], "none")
    assert not model.training and ref.phi.shape == (1, 50, 1)
