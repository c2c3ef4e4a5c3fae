"""Out-of-distribution image sets made on the machine, from nothing but what is already there, for
testing whether a model's outputs can tell in-distribution inputs (its test split) from others.

- `digits`: scikit-learn's 8x8 handwritten digits resized (bilinear) to the model's input, each grey
  image repeated over the colour channels: same concept, another source, resolution and framing;
- `uniform`: pixels drawn uniformly from [0, 1] (Hendrycks & Gimpel, ICLR 2017, arXiv 1610.02136);
- `gaussian`: pixels from N(0.5, 0.25^2) clipped to [0, 1] (the Gaussian-noise set of Hendrycks,
  Mazeika, Dietterich, "Deep Anomaly Detection with Outlier Exposure", ICLR 2019: `np.random.normal`
  with scale 0.5 in [-1, 1] units, clipped);
- `inverted`: test images with their intensities inverted, `1 - x`;
- `rotated`: test images turned by 90 degrees (180 when they are not square);
- and, given by the user, the test split of a second data set of the same image shape (CIFAR-100 for
  a CIFAR-10 model, say).

Every set is seeded, so an audit gives the same images every time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.core.errors import ConfigError
from bastion.core.random import make_generator
from bastion.data.digits import load_digits

__all__ = ["SYNTHETIC_SETS", "synthetic_set"]

SYNTHETIC_SETS = ("digits", "uniform", "gaussian", "inverted", "rotated")


def synthetic_set(name: str, x_id: Tensor, n: int, seed: int) -> Tensor:
    """`n` images of the OOD set `name`, shaped like the in-distribution test images `x_id` (M, C, H, W).

    `inverted` and `rotated` transform the first `n` of `x_id`; the others draw from a generator
    seeded with `seed`.
    """
    _, c, h, w = x_id.shape
    gen = make_generator(seed)
    if name == "uniform":
        return torch.rand(n, c, h, w, generator=gen)
    if name == "gaussian":
        return (0.5 + 0.25 * torch.randn(n, c, h, w, generator=gen)).clamp_(0, 1)
    if name == "inverted":
        return 1 - x_id[:n]
    if name == "rotated":
        return torch.rot90(x_id[:n], k=1 if h == w else 2, dims=(2, 3))
    if name == "digits":
        source = load_digits(seed=0)
        pool = torch.cat([source.x_train, source.x_test])  # (1797, 1, 8, 8)
        pick = pool[torch.randperm(pool.shape[0], generator=gen)[:n]]
        resized = F.interpolate(pick, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 1)
        return resized.expand(-1, c, -1, -1).contiguous()
    raise ConfigError(f"unknown OOD set {name!r}; the sets made here are {', '.join(SYNTHETIC_SETS)}")
