"""Membership inference: the scores match their papers' formulas, each candidate costs one query, the
attacks find the members of an overfitted model, and score chance when the "members" were never seen."""

from pathlib import Path

import pytest
import torch
from torch import nn

import bastion.attacks.privacy  # noqa: F401  (registers the attacks)
from bastion.attacks.privacy import Entropy, LossThreshold, ModifiedEntropy
from bastion.attacks.privacy.base import log_probs_and_complements
from bastion.core import ATTACKS, DataError, Victim, make_generator
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
        assert abs(ATTACKS.get(name)().run(victim, x, y, member).auroc - 0.5) <= 0.05, name


def test_bad_candidates_are_data_errors(overfit: tuple[Victim, Dataset]) -> None:
    victim, ds = overfit
    x, y, member = _candidates(ds, 10)
    with pytest.raises(DataError, match="labels and membership"):
        LossThreshold().run(victim, x, y[:5], member)
    with pytest.raises(DataError, match="positives and negatives"):
        LossThreshold().run(victim, x, y, torch.ones_like(member))
