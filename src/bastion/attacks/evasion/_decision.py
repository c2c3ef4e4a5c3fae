"""What the label-only attacks that walk the decision boundary share (`hsja`, `sign-opt`): per-sample
generators, so a sample's result does not depend on the batch it is attacked in, and the check of a
user's starting images."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from bastion.core.errors import DataError

__all__ = ["checked_pool", "sample_generators"]


def sample_generators(x: Tensor, gen: torch.Generator) -> list[torch.Generator]:
    """One generator per sample, seeded by one draw of `gen` and the sample's own pixels.

    A sample's random draws then depend on the run's seed and on that sample only, never on its position
    in the batch or on the other samples attacked with it.
    """
    root = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    key = root.to_bytes(8, "little")
    gens = []
    for row in x.detach().to("cpu", torch.float32).contiguous():
        digest = hashlib.blake2b(row.numpy().tobytes(), digest_size=8, key=key).digest()
        g = torch.Generator(device=x.device)
        g.manual_seed(int.from_bytes(digest, "little") >> 1)
        gens.append(g)
    return gens


def checked_pool(name: str, pool: Tensor | None, x: Tensor, bounds: tuple[float, float]) -> Tensor | None:
    """A user's starting images (P, C, H, W) checked against the inputs and the bounds, on their device."""
    if pool is None:
        return None
    if not isinstance(pool, Tensor) or pool.dim() != x.dim() or pool.shape[1:] != x.shape[1:]:
        got = tuple(pool.shape) if isinstance(pool, Tensor) else type(pool).__name__
        raise DataError(f"{name}: init_pool must be images (P, {', '.join(map(str, x.shape[1:]))}); got {got}")
    lo, hi = bounds
    if pool.numel() and (float(pool.min()) < lo or float(pool.max()) > hi):
        raise DataError(f"{name}: init_pool values must lie in the bounds [{lo}, {hi}]")
    return pool.to(x.device, x.dtype)
