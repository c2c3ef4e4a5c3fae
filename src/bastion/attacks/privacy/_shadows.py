"""Shadow models for membership inference: who trains on what, the per-query statistic, and what the
shadows answer on the population. Used by `lira` (Carlini et al., IEEE S&P 2022, arXiv 2112.03570).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bastion.core.errors import ConfigError, DataError
from bastion.core.random import make_generator
from bastion.core.victim import Victim

__all__ = [
    "Augment",
    "ShadowReference",
    "ShadowTrainer",
    "logit_margin",
    "shadow_membership",
    "shadow_statistics",
    "train_shadows",
    "views",
]

Augment = Literal["auto", "none", "mirror"]
# Trains one shadow on (x, y); the third argument is the shadow's index (it seeds and names the model).
ShadowTrainer = Callable[[Tensor, Tensor, int], nn.Module]


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """LiRA's statistic `phi = log p_y - log sum_{j != y} p_j = z_y - logsumexp_{j != y} z_j` (N,), float64,
    from logits (N, K) and labels (N,).

    It is the logit of the true class's confidence, `log(p / (1 - p))`, computed without forming `1 - p`:
    a member's `p_y` rounds to 1 in float32 long before the margin stops growing, and `1 - p` then
    underflows to 0 (an infinite statistic for every confident answer). The reference
    (`tensorflow/privacy` `research/mi_lira_2021/score.py`) normalises the softmax in float64 after
    subtracting the largest logit, sums the other classes' probabilities directly and adds 1e-45 inside
    both logarithms; the two agree wherever that sum exceeds 1e-45 (margins below about 100).
    """
    z = logits.double()
    own = y.to(z.device, torch.long)[:, None]
    rest = torch.logsumexp(z.scatter(1, own, -torch.inf), dim=1)  # (N,)
    return z.gather(1, own).squeeze(1) - rest


def views(x: Tensor, augment: Augment) -> list[Tensor]:
    """The queries made of each candidate: the image itself, and with `mirror` its left-right mirror
    (the reference's two augmentations), each (N, C, H, W). `auto` mirrors colour images only: bastion's
    recipes train colour models with flips and digit models without (`bastion.train.recipes`), and a
    mirrored digit, never seen in training, carries less of the membership signal (measured on mnist5k:
    `docs/privacy.md`)."""
    mirror = augment == "mirror" or (augment == "auto" and x.shape[1] == 3)
    return [x, x.flip(-1)] if mirror else [x]


@dataclass(frozen=True)
class ShadowReference:
    """What the shadow models say about a population of candidates.

    Attributes:
        phi: each shadow's statistic on each candidate and query view (S, N, A), float64.
        keep: which candidates each shadow trained on (S, N), bool.
    """

    phi: Tensor
    keep: Tensor

    def __post_init__(self) -> None:
        if self.phi.dim() != 3 or self.keep.shape != self.phi.shape[:2]:
            raise DataError(
                f"a shadow reference needs phi (S, N, A) and keep (S, N); got {tuple(self.phi.shape)} and "
                f"{tuple(self.keep.shape)}"
            )

    @property
    def models(self) -> int:
        return self.phi.shape[0]


def shadow_membership(models: int, n: int, seed: int) -> Tensor:
    """Which of `n` candidates each of `models` shadows trains on (models, n), bool: every candidate in
    exactly `models / 2` shadows, each shadow on about half of them.

    The reference's assignment (`research/mi_lira_2021/train.py`): uniforms (models, n) from the seed;
    each column's argsort is a random permutation of the shadows, and the shadows whose entry in it is
    below `models / 2` train on that candidate (the permutation is used as is, not turned into ranks:
    either way it is a uniform draw of half the shadows). The shadows' set sizes vary around `n / 2`.
    """
    if models < 2 or models % 2:
        raise ConfigError(
            f"the shadows split every candidate in half: their number must be even and >= 2; got {models}"
        )
    u = torch.rand(models, n, generator=make_generator(seed), dtype=torch.float64)
    return u.argsort(dim=0) < models // 2


@torch.no_grad()
def shadow_statistics(
    shadows: Sequence[nn.Module], x: Tensor, y: Tensor, keep: Tensor, augment: Augment
) -> ShadowReference:
    """Each shadow's `logit_margin` on every candidate (x, y) and view, in eval mode (the reference
    queries in training mode, with batch statistics; bastion queries as the target is queried)."""
    if len(shadows) != keep.shape[0] or keep.shape[1] != x.shape[0]:
        raise DataError(f"keep must be (shadows, N) = ({len(shadows)}, {x.shape[0]}); got {tuple(keep.shape)}")
    phi = []
    for model in shadows:
        victim = Victim(model)
        phi.append(torch.stack([logit_margin(victim.logits(v), y) for v in views(x, augment)], dim=1).cpu())
    return ShadowReference(torch.stack(phi), keep.cpu())


def train_shadows(x: Tensor, y: Tensor, keep: Tensor, train: ShadowTrainer, augment: Augment) -> ShadowReference:
    """Train shadow i on the candidates `keep[i]` marks (`train(x_i, y_i, i)`), then read their statistics.
    Models are trained one at a time and released once their statistics are read."""
    phi = []
    for i in range(keep.shape[0]):
        model = train(x[keep[i]], y[keep[i]], i)
        phi.append(shadow_statistics([model], x, y, keep[i : i + 1], augment).phi[0])
        del model
    return ShadowReference(torch.stack(phi), keep.cpu())
