"""The output-defense contract: a frozen dataclass of `param` fields that maps logits (N, K) to logits.

`PostProcess.__call__` is final: it checks the logits, calls the subclass's `_apply`, checks the
shape of what comes back and, for a class that promises to keep the predicted label
(`keeps_label`), asserts that every row's argmax is unchanged: an internal invariant, not a filter.
An instance is an `Oracle` post-processor (`bastion.core.oracle.PostProcessor`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from bastion.core.errors import DataError
from bastion.core.params import params_dict, validate_params
from bastion.core.registry import DEFENSES

__all__ = ["PostProcess", "keep_label", "log_probs", "register_postprocess"]


def register_postprocess(name: str) -> Any:
    """Class decorator: set `cls.name` and add the class to the `DEFENSES` registry (family `postprocess`)."""

    def add(cls: type[PostProcess]) -> type[PostProcess]:
        cls.name = name
        DEFENSES.register(name, family="postprocess")(cls)
        return cls

    return add


def log_probs(p: Tensor) -> Tensor:
    """log p with zero probabilities mapped to log of the smallest normal float (about -87 in float32), not
    -inf: a served score is finite, so margins and differences of logits never become NaN."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def keep_label(out: Tensor, label: Tensor) -> Tensor:
    """`out` (N, K) with each row's entry at `label` (N,) raised, where needed, to the next float above the
    row's largest other entry, so that argmax is `label` (ties included: argmax takes the first index)."""
    rows = torch.arange(out.shape[0], device=out.device)
    own = out[rows, label]
    other = out.scatter(1, label[:, None], -torch.inf).amax(dim=1)
    lifted = torch.where(own > other, own, torch.nextafter(other, torch.full_like(other, torch.inf)))
    out = out.clone()
    out[rows, label] = lifted
    return out


@dataclass(frozen=True, kw_only=True)
class PostProcess(ABC):
    """Base of the output post-processors (`bastion list defenses`).

    Class attributes a subclass sets:
        keeps_label: whether the served argmax always equals the model's (asserted on every call).
    """

    name: ClassVar[str] = "postprocess"
    keeps_label: ClassVar[bool] = True

    def __post_init__(self) -> None:
        validate_params(self)

    def params(self) -> dict[str, Any]:
        """The hyperparameters as plain JSON types."""
        return params_dict(self)

    def to_dict(self) -> dict[str, Any]:
        """`{"name": ..., "params": {...}}`: how a result records the defense it was served through."""
        return {"name": self.name, "params": self.params()}

    @abstractmethod
    def _apply(self, logits: Tensor, x: Tensor) -> Tensor:
        """The served logits (N, K) for the model's logits (N, K) on inputs x (N, ...)."""

    @final
    def __call__(self, logits: Tensor, x: Tensor) -> Tensor:
        if logits.dim() != 2 or not logits.is_floating_point():
            raise DataError(f"{self.name}: expects floating-point logits (N, K); got {tuple(logits.shape)}")
        if logits.shape[0] == 0:
            return logits
        out = self._apply(logits, x)
        if out.shape != logits.shape:  # pragma: no cover - a bug in the subclass, never a user error
            raise AssertionError(f"{self.name}: served logits {tuple(out.shape)} for {tuple(logits.shape)}")
        if self.keeps_label and not bool((out.argmax(dim=1) == logits.argmax(dim=1)).all()):
            raise AssertionError(f"{self.name}: the served argmax differs from the model's")  # pragma: no cover
        return out
