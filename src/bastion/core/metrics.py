"""Detection metrics from scores, exact and threshold-free: the ROC curve, AUROC, TPR at a fixed FPR,
FPR at a fixed TPR and the best balanced accuracy.

Convention: `positive` marks the samples to catch (a member of the training set, an in-distribution
input, a triggered input) and a higher score means "more likely positive". Every operating point
predicts positive for `score >= threshold`; ties are never split. Computed in float64 on the scores'
device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.core.errors import DataError

__all__ = ["auroc", "best_balanced_accuracy", "fpr_at_tpr", "roc_corners", "roc_curve", "tpr_at_fpr"]


def _check(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    if scores.dim() != 1 or positive.shape != scores.shape:
        raise DataError(
            f"scores and labels must be two (N,) tensors; got {tuple(scores.shape)}, {tuple(positive.shape)}"
        )
    positive = positive.to(scores.device, torch.bool)
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.numel():
        raise DataError(f"detection metrics need positives and negatives; got {n_pos} of {positive.numel()} positive")
    if not bool(torch.isfinite(scores).all()):
        raise DataError("scores must be finite (a NaN or infinite score has no rank)")
    return scores.double(), positive


def roc_curve(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(fpr, tpr, thresholds), one point per distinct score from the highest down, after (0, 0).

    Point i predicts positive for `score >= thresholds[i]` (the first point, threshold +inf, predicts
    nothing positive).
    """
    s, pos = _check(scores, positive)
    order = torch.argsort(s, descending=True, stable=True)
    s, pos = s[order], pos[order]
    tp = torch.cumsum(pos.double(), 0)
    fp = torch.cumsum((~pos).double(), 0)
    last = torch.ones_like(pos)  # the last sample of each run of equal scores closes an operating point
    last[:-1] = s[1:] != s[:-1]
    zero = s.new_zeros(1)
    fpr = torch.cat([zero, fp[last] / fp[-1]])
    tpr = torch.cat([zero, tp[last] / tp[-1]])
    thresholds = torch.cat([s.new_full((1,), torch.inf), s[last]])
    return fpr, tpr, thresholds


def roc_corners(scores: Tensor, positive: Tensor) -> tuple[list[float], list[float]]:
    """The ROC curve as plain lists, keeping only the points where it turns (and its two ends): the same
    staircase with far fewer points, small enough to store with a result and to plot."""
    fpr, tpr, _ = roc_curve(scores, positive)
    keep = torch.ones_like(fpr, dtype=torch.bool)
    if fpr.numel() > 2:
        dx, dy = fpr[1:] - fpr[:-1], tpr[1:] - tpr[:-1]
        straight = (dx[1:] * dy[:-1] == dx[:-1] * dy[1:]) & (dx[1:] * dx[:-1] + dy[1:] * dy[:-1] > 0)
        keep[1:-1] = ~straight  # a point between two collinear steps says nothing
    return fpr[keep].tolist(), tpr[keep].tolist()


def auroc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve, `P(s+ > s-) + P(s+ = s-) / 2` (Mann-Whitney U from average ranks)."""
    s, pos = _check(scores, positive)
    order = torch.argsort(s, stable=True)
    sorted_s = s[order]
    _, inverse, counts = torch.unique_consecutive(sorted_s, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each run of ties
    ranks = torch.empty_like(s)
    ranks[order] = avg_rank[inverse]
    n_pos, n_neg = float(pos.sum()), float((~pos).sum())
    u = float(ranks[pos].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def tpr_at_fpr(scores: Tensor, positive: Tensor, max_fpr: float) -> float:
    """The largest TPR of an operating point whose FPR is at most `max_fpr` (no interpolation)."""
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def fpr_at_tpr(scores: Tensor, positive: Tensor, min_tpr: float) -> float:
    """The smallest FPR of an operating point whose TPR is at least `min_tpr` (OOD detection's FPR at 95%
    TPR: the share of negatives kept by the threshold that keeps `min_tpr` of the positives)."""
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(fpr[tpr >= min_tpr - 1e-12].min())


def best_balanced_accuracy(scores: Tensor, positive: Tensor) -> float:
    """`max over thresholds of 1 - (FPR + FNR) / 2`: the accuracy of the best single threshold on a
    balanced set (0.5 is chance)."""
    fpr, tpr, _ = roc_curve(scores, positive)
    return float((1 - (fpr + 1 - tpr) / 2).max())
