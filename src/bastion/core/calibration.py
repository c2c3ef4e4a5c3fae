"""Calibration of a classifier's scores: expected calibration error and temperature scaling.

`ece` bins the top-class confidence into equal-width bins on (0, 1] (15 by default, the count of Guo
et al., "On Calibration of Modern Neural Networks", ICML 2017, and of `Sizhe-Chen/AAA`'s `ece_score`)
and averages |accuracy - confidence| over the bins, weighted by their share of the samples.
`fit_temperature` picks the temperature T that minimises it for logits / T on held-out data, over the
grid `Sizhe-Chen/AAA` searches: t and 1/t for t = 0.001, 0.002, ..., 0.999.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.core.errors import ConfigError, DataError

__all__ = ["ece", "ece_stack", "fit_temperature", "temperature_grid"]

_CHUNK = 64  # temperatures evaluated per batched pass of `fit_temperature`


def _check(scores: Tensor, y: Tensor) -> None:
    if scores.dim() != 2 or y.dim() != 1 or scores.shape[0] != y.shape[0]:
        raise DataError(f"calibration needs scores (N, K) and labels (N,); got {tuple(scores.shape)}, {tuple(y.shape)}")
    if scores.shape[0] == 0:
        raise DataError("calibration needs at least one sample; got an empty batch")


def ece_stack(probs: Tensor, y: Tensor, n_bins: int = 15) -> Tensor:
    """ECE of each of G stacked sets of probabilities for the same labels: probs (G, N, K), y (N,) -> (G,)."""
    conf, pred = probs.max(dim=2)  # (T, N)
    hit = (pred == y).to(probs.dtype)
    # bin m holds confidences in (m / n_bins, (m + 1) / n_bins], as in the reference
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    gap = torch.zeros(probs.shape[0], n_bins, dtype=probs.dtype, device=probs.device)
    gap.scatter_add_(1, bins, hit - conf)  # sum of (accuracy - confidence) per bin
    return gap.abs().sum(dim=1) / probs.shape[1]


def ece(scores: Tensor, y: Tensor, *, n_bins: int = 15, probs: bool = False) -> float:
    """Expected calibration error of scores (N, K) for labels y (N,), in [0, 1].

    Args:
        scores: logits (softmax is applied) or, with `probs=True`, probabilities.
        y: true labels.
        n_bins: equal-width confidence bins on (0, 1].
        probs: whether `scores` are already probabilities.
    """
    _check(scores, y)
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1; got {n_bins}")
    p = scores.double() if probs else scores.double().softmax(dim=1)
    return float(ece_stack(p[None], y.to(p.device), n_bins)[0])


def temperature_grid(step: float = 0.001) -> Tensor:
    """The candidate temperatures (float64): 1, then t and 1/t for t = step, 2 step, ... < 1 (the reference's)."""
    if not 0 < step < 1:
        raise ConfigError(f"step must lie in (0, 1); got {step}")
    t = torch.arange(1, round(1 / step), dtype=torch.float64) * step
    return torch.cat([torch.ones(1, dtype=torch.float64), t, 1 / t])


def fit_temperature(logits: Tensor, y: Tensor, *, step: float = 0.001, n_bins: int = 15) -> float:
    """The temperature T minimising the ECE of softmax(logits / T) on held-out (logits, y).

    The grid is `temperature_grid(step)`; the first minimum wins. Fit it on
    data the model was not trained on and that the evaluation does not use.
    """
    _check(logits, y)
    grid = temperature_grid(step).to(logits.device)
    z, y = logits.double(), y.to(logits.device)
    errors = torch.cat(
        [ece_stack((z[None] / ts[:, None, None]).softmax(dim=2), y, n_bins) for ts in grid.split(_CHUNK)]
    )
    return float(grid[int(errors.argmin())])
