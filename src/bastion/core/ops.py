"""Tensor helpers shared by every layer: normalisation, batching, devices, norms and balls, the DCT basis."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import torch
from torch import Tensor, nn

from bastion.core.errors import ConfigError

__all__ = [
    "BALL_TOLERANCE",
    "Normalize",
    "batch_slices",
    "dct_matrix",
    "in_ball",
    "lp_norms",
    "project",
    "resolve_device",
]


class Normalize(nn.Module):
    """`(x - mean) / std` per channel, as the first layer of a model that takes inputs in [0, 1].

    Mean and std are buffers (saved with the weights, moved with the model), not parameters.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ConfigError(f"normalisation mean has {len(mean)} values but std has {len(std)}; give one per channel")
        if any(s <= 0 for s in std):
            raise ConfigError(f"normalisation std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Slices covering range(n) in order, each at most `batch_size` long."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None` or "auto" -> CUDA when available, else CPU; otherwise the device named, checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= (count := torch.cuda.device_count()):
        raise ConfigError(
            f"device {device!r} asked for, but {count} CUDA device(s) are visible here: use cuda:0 to cuda:{count - 1}"
        )
    return dev


# Float32 slack of the final ball check: one ulp at 1.0 (2^-23), so an L-inf result at 8/255 is at most
# 8/255 + 1.2e-7, below the 8.0001/255 a test forbids.
BALL_TOLERANCE = 2.0**-23


def lp_norms(delta: Tensor, norm: str) -> Tensor:
    """Per-sample norm (N,) of `delta` (N, ...): `linf`, `l2` or `l0` (count of non-zero values)."""
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise ConfigError(f"unknown norm {norm!r}; use linf, l2 or l0")


def project(x_adv: Tensor, x: Tensor, norm: str, eps: float | Tensor, bounds: tuple[float, float]) -> Tensor:
    """Project `x_adv` onto the `norm` ball of radius `eps` around `x`, then clip to `bounds`.

    L2: the perturbation is scaled down to norm eps first; clipping to the box afterwards only shrinks
    its coordinates, so the norm stays <= eps. `eps` may be a float or per sample (N,).
    """
    lo, hi = bounds
    if norm == "linf":
        e = eps if not isinstance(eps, Tensor) else eps.view(-1, *([1] * (x.dim() - 1)))
        return torch.min(torch.max(x_adv, x - e), x + e).clamp(lo, hi)
    if norm == "l2":
        delta = x_adv - x
        n = delta.flatten(1).norm(p=2, dim=1)
        factor = torch.clamp(eps / (n + 1e-12), max=1.0).view(-1, *([1] * (x.dim() - 1)))
        return (x + delta * factor).clamp(lo, hi)
    raise ConfigError(f"projection onto the {norm!r} ball is not defined; use linf or l2")


def in_ball(x_adv: Tensor, x: Tensor, norm: str, eps: float, bounds: tuple[float, float]) -> Tensor:
    """Per sample (N,): whether `x_adv` lies in the ball around `x` and inside `bounds`, with float32 slack."""
    lo, hi = bounds
    slack = BALL_TOLERANCE * max(1.0, eps)
    inside_box = ((x_adv >= lo) & (x_adv <= hi)).flatten(1).all(dim=1)
    return inside_box & (lp_norms(x_adv - x, norm) <= eps + slack)


@lru_cache(maxsize=16)
def _dct_cached(n: int, device: torch.device) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float().to(device)


def dct_matrix(n: int, device: str | torch.device = "cpu") -> Tensor:
    """The orthonormal DCT-II matrix (n, n): row k is the k-th cosine, `D @ x` is scipy's `dct(x, norm="ortho")`
    and `D.T @ c` its inverse.

    Built in float64 and rounded once to float32, then cached per (n, device), because the attacks that search
    low-frequency directions ask for it at every step: the tensor is shared, and callers must not write into it.
    """
    return _dct_cached(n, torch.device(device))
