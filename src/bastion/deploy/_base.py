"""What every deployed model shares: batching, the check of its answers, logits from what it reveals, oracles."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.core.errors import BastionError, ConfigError, ModelError
from bastion.core.ops import batch_slices
from bastion.core.oracle import ExhaustedPolicy, Oracle, OutputMode, PostProcessor, Reveals
from bastion.core.victim import check_batch

__all__ = ["DeployedModel"]

# log(0) would give -inf scores; the smallest normal float32 keeps every score finite (log = -87.3).
_TINY = torch.finfo(torch.float32).tiny


class DeployedModel(ABC):
    """A classifier known only by its answers: the `BlackBoxModel` that `Oracle` and black-box attacks query.

    A subclass answers one batch of at most `batch_size` rows (`_answer_batch`) with what the model
    reveals: logits or probabilities (N, K) float32, or labels (N,) int64. This base splits larger
    inputs, checks every answer's shape and range, derives logits (log-probabilities for a model that
    reveals probabilities) and labels, and makes oracles: the query accounting, budgets and
    post-processors are `Oracle`'s, the same as for an in-process `Victim`. No gradient exists here.

    Args:
        name: how the model is shown (a file name, a URL).
        identity: a stable SHA-256 of the model (the ONNX file's bytes; an endpoint's URL and self-description).
        reveals: what the answers reveal.
        num_classes: K.
        input_shape: (C, H, W) of the inputs.
        bounds: the input range.
        batch_size: the most rows answered at once.
        info: what the model says about itself (metadata), kept with results.
    """

    device: ClassVar[torch.device] = torch.device("cpu")
    error: ClassVar[type[BastionError]] = ModelError  # raised when an answer is not usable

    def __init__(
        self,
        *,
        name: str,
        identity: str,
        reveals: Reveals,
        num_classes: int,
        input_shape: tuple[int, int, int],
        bounds: tuple[float, float] = (0.0, 1.0),
        batch_size: int = 256,
        info: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1; got {batch_size}")
        if num_classes < 2:
            raise ConfigError(f"a classifier has at least 2 classes; got {num_classes}")
        self.name = name
        self.identity = identity
        self.reveals: Reveals = reveals
        self.num_classes = int(num_classes)
        self.input_shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.batch_size = batch_size
        self.info = dict(info or {})

    @abstractmethod
    def _answer_batch(self, x: Tensor) -> Tensor:
        """The model's answer to a batch x (M <= batch_size, C, H, W) float32 on the CPU."""

    def answer(self, x: Tensor) -> Tensor:
        """The model's raw answers to x (N, C, H, W): (N, K) logits or probabilities, or (N,) labels."""
        x = x.detach().to("cpu", torch.float32).contiguous()
        if x.shape[0] == 0:
            return torch.zeros((0,) if self.reveals == "label" else (0, self.num_classes))
        return torch.cat([self._checked(self._answer_batch(x[s]), s.stop - s.start) for s in self._slices(x)])

    def _slices(self, x: Tensor) -> list[slice]:
        return list(batch_slices(x.shape[0], self.batch_size))

    def _checked(self, out: Tensor, rows: int) -> Tensor:
        """An answer of the shape and range `reveals` promises, or `error` saying what came back."""
        if self.reveals == "label":
            if out.shape != (rows,):
                raise self.error(f"{self.name} answered {tuple(out.shape)} labels for {rows} inputs")
            out = out.to(torch.long)
            if rows and bool(((out < 0) | (out >= self.num_classes)).any()):
                raise self.error(f"{self.name} answered labels outside [0, {self.num_classes})")
            return out
        if out.shape != (rows, self.num_classes):
            raise self.error(
                f"{self.name} answered {self.reveals} of shape {tuple(out.shape)} for {rows} inputs; "
                f"expected ({rows}, {self.num_classes})"
            )
        out = out.to(torch.float32)
        if not bool(torch.isfinite(out).all()):
            raise self.error(f"{self.name} answered {self.reveals} that are not finite")
        if self.reveals == "probs" and bool(((out < -1e-6) | (out > 1 + 1e-6)).any()):
            raise self.error(f"{self.name} answered probabilities outside [0, 1]")
        return out

    def logits(self, x: Tensor) -> Tensor:
        """Logits (N, K): the model's own, or the logarithm of its probabilities (equal up to a per-row constant)."""
        if self.reveals == "label":
            raise ConfigError(f"{self.name} answers with labels only: it has no scores to give")
        out = self.answer(x)
        return out.clamp_min(_TINY).log() if self.reveals == "probs" else out

    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels (N,), int64."""
        out = self.answer(x)
        return out if self.reveals == "label" else out.argmax(dim=1)

    def check_input(self, x: Tensor) -> None:
        """Raise `DataError` unless `x` is a float batch of the model's input shape inside its bounds."""
        check_batch(x, self.input_shape, self.bounds)

    def oracle(
        self,
        n: int,
        *,
        output: OutputMode = "probs",
        k: int | None = None,
        postprocess: Sequence[PostProcessor] = (),
        max_queries: int | None = None,
        on_exhausted: ExhaustedPolicy = "raise",
    ) -> Oracle:
        """A black-box view of this model for a batch of `n` samples; see `Oracle`."""
        return Oracle(
            self, n, output=output, k=k, postprocess=postprocess, max_queries=max_queries, on_exhausted=on_exhausted
        )

    def describe(self) -> dict[str, Any]:
        """The model as plain JSON types: how it is stored with an audit."""
        return {
            "name": self.name,
            "sha256": self.identity,
            "reveals": self.reveals,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "bounds": list(self.bounds),
            "info": self.info,
        }
