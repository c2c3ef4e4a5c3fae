"""The ownership contract (family `ownership`).

An owner holds a secret (a watermark key, a signature key, a regressor fitted on the owner's own
model and private data) and checks a suspect model with it. The check ends in a p-value: the chance
that a model independent of the owner's (same data distribution, its own training) gives evidence at
least this strong. Every method is a frozen dataclass of `param` fields with a `seed` and the level
`alpha` of the claim; `embeds` says whether the method changes the model (watermarks) or reads it as
it is (dataset inference).

A suspect is queried as a deployed API would be: through an `Oracle` (label mode where the method
allows it), each probe's queries counted. `OwnershipResult` holds the statistic, the p-value, the
queries and, where given test images, the suspect's clean accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.core.errors import DataError
from bastion.core.params import param, params_dict, validate_params
from bastion.core.registry import DEFENSES
from bastion.core.victim import Victim

__all__ = ["OwnershipMethod", "clean_accuracy", "key_batch_edit", "register_ownership"]


def register_ownership(name: str) -> Any:
    """Class decorator: set `cls.name` and add the class to `DEFENSES` in the `ownership` family."""

    def add(cls: type) -> type:
        cls.name = name  # type: ignore[attr-defined]
        DEFENSES.register(name, family="ownership")(cls)
        return cls

    return add


@dataclass(frozen=True, kw_only=True)
class OwnershipMethod:
    """Base of the ownership methods: a frozen dataclass of `param` fields."""

    name: ClassVar[str] = "ownership"
    family: ClassVar[str] = "ownership"
    embeds: ClassVar[bool] = True

    alpha: float = param(0.01, gt=0, lt=1, help="significance level of the ownership claim")
    seed: int = param(0, ge=0, help="seed of the method's random draws")

    def __post_init__(self) -> None:
        validate_params(self)

    def params(self) -> dict[str, Any]:
        return params_dict(self)


def clean_accuracy(suspect: Victim, x: Tensor | None, y: Tensor | None) -> float | None:
    """The suspect's accuracy on (x, y), or None without test images."""
    if x is None or y is None:
        return None
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise DataError(f"test images and labels must pair up and not be empty; got {x.shape[0]} and {y.shape[0]}")
    return float((suspect.predict(x).cpu() == y.cpu()).double().mean())


def key_batch_edit(x_key: Tensor, y_key: Tensor, per_batch: int, seed: int) -> Any:
    """A `bastion.train.Hooks.batch` edit appending `per_batch` key samples (x_key, y_key) to every training
    batch: each pass over the key follows a fresh seeded permutation, so every key sample is seen equally
    often (the reference appends 2 per batch of 100 from a shuffled loader)."""
    n = x_key.shape[0]
    if n == 0:
        raise DataError("the key has no samples to append to the training batches")
    gen = torch.Generator().manual_seed(seed)
    state = {"order": torch.randperm(n, generator=gen), "pos": 0}
    on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}  # the key moved to the batches' device once

    def edit(x: Tensor, y: Tensor, _gen: torch.Generator) -> tuple[Tensor, Tensor]:
        if x.device not in on_device:
            on_device[x.device] = (x_key.to(x.device), y_key.to(y.device))
        keys_x, keys_y = on_device[x.device]
        take = []
        while len(take) < per_batch:
            if state["pos"] >= n:
                state["order"], state["pos"] = torch.randperm(n, generator=gen), 0
            step = min(per_batch - len(take), n - state["pos"])
            take.extend(state["order"][state["pos"] : state["pos"] + step].tolist())
            state["pos"] += step
        idx = torch.tensor(take, device=x.device)
        xk, yk = keys_x[idx].to(dtype=x.dtype), keys_y[idx].to(dtype=y.dtype)
        return torch.cat([x, xk]), torch.cat([y, yk])

    return edit
