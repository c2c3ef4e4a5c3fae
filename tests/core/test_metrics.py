"""Detection metrics: known answers, and agreement with scikit-learn and with brute force on random scores."""

import pytest
import torch
from sklearn.metrics import roc_auc_score

from bastion.core import DataError, make_generator
from bastion.core.metrics import auroc, best_balanced_accuracy, fpr_at_tpr, roc_corners, roc_curve, tpr_at_fpr


def _random(n: int, seed: int, ties: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = make_generator(seed)
    positive = torch.rand(n, generator=gen) < 0.4
    scores = torch.randn(n, generator=gen) + positive.float()
    return (scores * 4).round() if ties else scores, positive


def test_known_answers() -> None:
    pos = torch.tensor([True, True, False, False])
    assert auroc(torch.tensor([4.0, 3, 2, 1]), pos) == 1.0
    assert auroc(torch.tensor([1.0, 2, 3, 4]), pos) == 0.0
    assert auroc(torch.ones(4), pos) == 0.5  # all tied: half credit
    assert auroc(torch.tensor([3.0, 1, 2, 0]), pos) == 0.75
    fpr, tpr, thr = roc_curve(torch.tensor([3.0, 1, 2, 0]), pos)
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1] and thr[0] == torch.inf
    assert tpr_at_fpr(torch.tensor([3.0, 1, 2, 0]), pos, 0.0) == 0.5
    assert fpr_at_tpr(torch.tensor([3.0, 1, 2, 0]), pos, 0.95) == 0.5
    assert best_balanced_accuracy(torch.tensor([3.0, 1, 2, 0]), pos) == 0.75


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_sklearn_and_brute_force(seed: int, ties: bool) -> None:
    scores, positive = _random(300, seed, ties)
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive.numpy(), scores.numpy()), abs=1e-12)
    thresholds = torch.cat([scores.unique(), torch.tensor([torch.inf])])
    pred = scores[None, :] >= thresholds[:, None]  # (T, N): every operating point
    tpr = (pred & positive).sum(1).double() / positive.sum()
    fpr = (pred & ~positive).sum(1).double() / (~positive).sum()
    for x in (0.001, 0.01, 0.1, 0.5):
        assert tpr_at_fpr(scores, positive, x) == float(tpr[fpr <= x].max())
    assert fpr_at_tpr(scores, positive, 0.95) == float(fpr[tpr >= 0.95].min())
    assert best_balanced_accuracy(scores, positive) == pytest.approx(float((1 - (fpr + 1 - tpr) / 2).max()))


@pytest.mark.parametrize("ties", [False, True])
def test_roc_corners_keep_the_curve(ties: bool) -> None:
    scores, positive = _random(500, 7, ties)
    fpr, tpr = roc_corners(scores, positive)
    full_fpr, _, _ = roc_curve(scores, positive)
    assert len(fpr) < len(full_fpr) and (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    f, t = torch.tensor(fpr, dtype=torch.float64), torch.tensor(tpr, dtype=torch.float64)
    area = float(((f[1:] - f[:-1]) * (t[1:] + t[:-1]) / 2).sum())  # trapezoids of the kept points
    assert area == pytest.approx(auroc(scores, positive), abs=1e-12)


def test_bad_inputs_are_data_errors() -> None:
    with pytest.raises(DataError, match="positives and negatives"):
        auroc(torch.rand(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(DataError, match="finite"):
        auroc(torch.tensor([0.0, torch.nan]), torch.tensor([True, False]))
    with pytest.raises(DataError, match=r"\(N,\)"):
        auroc(torch.rand(5), torch.ones(4, dtype=torch.bool))
