"""Seeding: every random draw comes from a generator built from an explicit seed."""

from __future__ import annotations

import random

import torch

__all__ = ["make_generator", "random_targets", "seed_everything"]


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device`, seeded with `seed` (no wall-clock fallback exists)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed the global generators that code outside bastion uses (layer initialisation, dropout).

    bastion's own draws use `make_generator`; this covers `nn.Module` initialisers, which take no
    generator argument.
    """
    random.seed(seed)
    torch.manual_seed(seed)


def random_targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A seeded random wrong class per label (N,): the targets of a targeted evaluation."""
    shift = torch.randint(1, num_classes, y.shape, generator=make_generator(seed))
    return (y.cpu() + shift) % num_classes
