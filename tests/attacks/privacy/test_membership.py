"""Membership inference: the scores match their papers' formulas, each candidate costs one query, the
attacks find the members of an overfitted model, and score chance when the "members" were never seen."""

from pathlib import Path

import pytest
import torch
from torch import nn

import bastion.attacks.privacy  # noqa: F401  (registers the attacks)
from bastion.attacks.privacy import Entropy, LossThreshold, ModifiedEntropy
from bastion.attacks.privacy.base import best_threshold, known_split, log_probs_and_complements
from bastion.core import ATTACKS, ConfigError, DataError, Victim, make_generator
from bastion.data import Dataset, load_dataset
from bastion.models.checkpoint import load_checkpoint


def test_scores_follow_the_papers_formulas() -> None:
    z = torch.randn(50, 10, generator=make_generator(0)) * 3
    y = torch.randint(0, 10, (50,), generator=make_generator(1))
    p = z.double().softmax(1)
    rows = torch.arange(50)
    assert torch.allclose(LossThreshold()._score(z, y), p[rows, y].log())  # minus the cross-entropy
    assert torch.allclose(Entropy()._score(z, y), (p * p.log()).sum(1))  # minus the entropy
    mentr = -(1 - p[rows, y]) * p[rows, y].log() - ((p * (1 - p).log()).sum(1) - p[rows, y] * (1 - p[rows, y]).log())
    assert torch.allclose(ModifiedEntropy()._score(z, y), -mentr)


def test_confident_answers_keep_their_precision() -> None:
    z = torch.tensor([[60.0, 0.0, 0.0], [40.0, 0.0, 0.0]])  # p_top rounds to 1 in float64
    log_p, log_q = log_probs_and_complements(z)
    assert log_p[0, 0] < 0 and log_p[0, 0] > log_p[1, 0]  # the more confident answer scores higher
    expected = torch.tensor([-60.0, -40.0], dtype=torch.float64) + torch.tensor(2.0, dtype=torch.float64).log()
    assert torch.allclose(log_q[:, 0], expected)  # 1 - p_top = 2 exp(-z_top), not 0
    y = torch.tensor([0, 0])
    assert ModifiedEntropy()._score(z, y)[0] > ModifiedEntropy()._score(z, y)[1]


@pytest.fixture(scope="module")
def overfit(overfit_checkpoint: Path) -> tuple[Victim, Dataset]:
    model, meta = load_checkpoint(overfit_checkpoint)
    assert meta.train_n == 200
    return Victim(model, input_shape=(1, 28, 28)), load_dataset("mnist5k")


def _candidates(ds: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.cat([ds.x_train[:n], ds.x_test[:n]])
    y = torch.cat([ds.y_train[:n], ds.y_test[:n]])
    return x, y, torch.arange(2 * n) < n


@pytest.mark.parametrize("name", ["loss-threshold", "entropy", "modified-entropy"])
def test_attacks_find_the_members_of_an_overfitted_model(name: str, overfit: tuple[Victim, Dataset]) -> None:
    victim, ds = overfit
    x, y, member = _candidates(ds, 200)
    assert bool((victim.predict(x[:200]) == y[:200]).all())  # memorised
    result = ATTACKS.get(name)().run(victim, x, y, member)
    assert result.auroc > 0.58 and result.balanced_accuracy > 0.55
    assert result.queries is not None and result.queries.tolist() == [1] * 400  # one query per candidate
    d = result.to_dict()
    assert d["n_positive"] == d["n_negative"] == 200 and d["roc"]["fpr"][0] == 0 and d["roc"]["tpr"][-1] == 1


def test_modified_entropy_is_at_least_as_strong_as_entropy(overfit: tuple[Victim, Dataset]) -> None:
    victim, ds = overfit
    x, y, member = _candidates(ds, 200)
    mentr, ent = ModifiedEntropy().run(victim, x, y, member), Entropy().run(victim, x, y, member)
    assert mentr.auroc >= ent.auroc - 0.005  # Song & Mittal: the label-aware score never ranks worse here


def test_yeom_threshold_is_the_mean_training_loss(overfit: tuple[Victim, Dataset]) -> None:
    victim, ds = overfit
    x, y, member = _candidates(ds, 200)
    result = LossThreshold().run(victim, x, y, member)
    assert result.extra["yeom_threshold"] == pytest.approx(float(result.scores[member].mean()))
    assert 0.5 < result.extra["yeom_balanced_accuracy"] <= result.balanced_accuracy + 1e-12


def test_images_the_model_never_saw_score_chance(mnist_model: nn.Module, mnist_data: Dataset) -> None:
    victim = Victim(mnist_model, input_shape=(1, 28, 28))
    x, y = mnist_data.x_test, mnist_data.y_test  # 1,000 unseen images, split in two as "members" and not
    member = torch.arange(x.shape[0]) < 500
    for name in ATTACKS.names("membership"):
        if ATTACKS.get(name).needs_reference:
            continue  # shadow-model attacks: chance on shuffled labels in test_lira.py
        for thresholds in ("global", "class"):
            result = ATTACKS.get(name)(thresholds=thresholds).run(victim, x, y, member)
            assert abs(result.auroc - 0.5) <= 0.05, (name, thresholds)


def test_bad_candidates_are_data_errors(overfit: tuple[Victim, Dataset]) -> None:
    victim, ds = overfit
    x, y, member = _candidates(ds, 10)
    with pytest.raises(DataError, match="labels and membership"):
        LossThreshold().run(victim, x, y[:5], member)
    with pytest.raises(DataError, match="positives and negatives"):
        LossThreshold().run(victim, x, y, torch.ones_like(member))


def test_best_threshold_maximises_balanced_accuracy() -> None:
    members, others = torch.tensor([3.0, 5.0, 6.0]), torch.tensor([1.0, 2.0, 4.0, 5.5])
    # t = 3 keeps every member and half the non-members out: (1 + 2/4) / 2 = 0.75; t = 5: (2/3 + 3/4) / 2
    # = 0.71, t = 5.5: (1/3 + 4/4) / 2 = 0.67, t = 2: (1 + 1/4) / 2 = 0.63
    assert best_threshold(members, others) == 3.0
    # equals: t = 2 and t = 3 both separate perfectly; the members' value comes first, as in the reference
    assert best_threshold(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 3.0


class _MarginModel(nn.Module):
    """Two classes; pixel 0 holds a tenth of the true class's logit, pixel 1 the class: score = margin."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, 0, 0, 0] * 10, x[:, 0, 0, 1]
        return torch.stack([a * (1 - b), a * b], dim=1)


def test_class_thresholds_remove_the_scale_of_each_class() -> None:
    # class 0: members' margins in [9, 10], non-members' in [7, 8]; class 1: members [4, 5], non-members
    # [2, 3]. One threshold mixes class 0's non-members above class 1's members: AUROC 0.75 exactly;
    # one threshold per class separates both classes: AUROC 1.
    gen = make_generator(0)
    lows = torch.tensor([9.0, 7.0, 4.0, 2.0]).repeat_interleave(50)
    margin = lows + torch.rand(200, generator=gen)
    y = torch.tensor([0, 0, 1, 1]).repeat_interleave(50)
    member = torch.tensor([True, False, True, False]).repeat_interleave(50)
    x = torch.stack([margin / 10, y.float()], dim=1).view(200, 1, 1, 2)
    victim = Victim(_MarginModel(), input_shape=(1, 1, 2))
    assert LossThreshold().run(victim, x, y, member).auroc == pytest.approx(0.75)
    result = LossThreshold(thresholds="class", seed=3).run(victim, x, y, member)
    assert result.auroc == 1.0 and result.balanced_accuracy == 1.0
    assert result.extra["known"] == 100 and result.scores.numel() == 100  # the known half is fitted, not measured
    assert result.extra["pooled_classes"] == [] and not result.warnings
    # at 0, the paper's decision: every measured candidate on the right side of its class's threshold
    assert bool(((result.scores >= 0) == result.positive).all())


def test_class_thresholds_measure_only_what_the_attacker_did_not_know(overfit: tuple[Victim, Dataset]) -> None:
    victim, ds = overfit
    x, y, member = _candidates(ds, 200)
    known = known_split(member, 0.5, seed=7)
    assert int((known & member).sum()) == int((known & ~member).sum()) == 100
    drawn = ModifiedEntropy(thresholds="class", seed=7).run(victim, x, y, member)
    given = ModifiedEntropy(thresholds="class").run(victim, x, y, member, known=known)
    assert torch.equal(drawn.scores, given.scores) and torch.equal(drawn.positive, member[~known])
    assert given.queries is not None and given.queries.tolist() == [1] * 200  # one query per measured candidate
    raw = ModifiedEntropy()._score(victim.logits(x), y)
    cut = torch.tensor(given.extra["class_thresholds"], dtype=torch.float64)
    assert torch.allclose(given.scores, (raw - cut[y])[~known])
    assert given.auroc > 0.58  # still finds the members of the overfitted model
    with pytest.raises(ConfigError, match="class"):
        ModifiedEntropy().run(victim, x, y, member, known=known)
    with pytest.raises(DataError, match="known and unknown members"):
        ModifiedEntropy(thresholds="class").run(victim, x, y, member, known=member.clone())
