"""Victim: the white-box view of a classifier, and the factory of its black-box oracles."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bastion.core.errors import ConfigError, DataError, ModelError
from bastion.core.ops import Normalize, batch_slices, resolve_device
from bastion.core.oracle import ExhaustedPolicy, Oracle, OutputMode, PostProcessor

__all__ = ["Victim", "check_batch"]

# Inputs may sit this far outside the bounds (float32 rounding of an in-bounds value) and still count as inside.
BOUNDS_TOLERANCE = 1e-6


class Victim:
    """Wraps a classifier `nn.Module` that maps a batch in `bounds` to logits.

    On construction the model is moved to `device` and put in eval mode (batch-norm statistics and
    dropout fixed, as a deployed model runs); that mode is the one lasting change, and a training loop
    that attacks the model it trains puts it back in train mode itself. Nothing else is touched: the
    parameters keep their `requires_grad` flags, because attacks differentiate with respect to the
    inputs only (`torch.autograd.grad`), which computes no weight gradient and leaves `.grad` alone.
    Inputs larger than `batch_size` are split into batches.

    Args:
        model: maps (N, C, H, W) inputs in `bounds` to (N, K) logits.
        num_classes: K; read off the first forward pass when not given.
        input_shape: expected (C, H, W); inputs are checked against it when given.
        bounds: the valid input range.
        mean, std: a per-channel normalisation to apply before the model, for models that expect
            normalised inputs (bastion's own models normalise inside and need none).
        batch_size: the largest batch sent to the model at once.
        device: where the model runs (`None`: the device of its parameters, else CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError(f"a Victim wraps a torch.nn.Module; got {type(model).__name__}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1; got {batch_size}")
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std for the normalisation, or neither")
        if device is None:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = resolve_device(device)
        self.model = nn.Sequential(Normalize(mean, std), model) if mean is not None and std is not None else model
        self.model.to(self.device).eval()
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.input_shape = input_shape
        self.batch_size = batch_size
        self._num_classes = num_classes

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            if self.input_shape is None:
                raise ModelError("the number of classes is unknown: pass num_classes or input_shape to the Victim")
            self.logits(torch.zeros(1, *self.input_shape, device=self.device))
        assert self._num_classes is not None
        return self._num_classes

    def like(self, model: nn.Module) -> Victim:
        """Another model seen the way this one is: the same input shape, classes, bounds, batch size and
        device (a retrained, fine-tuned, quantized or stolen copy of the model, measured beside it)."""
        return Victim(
            model,
            num_classes=self._num_classes,
            input_shape=self.input_shape,
            bounds=self.bounds,
            batch_size=self.batch_size,
            device=self.device,
        )

    def check_input(self, x: Tensor) -> None:
        """Raise `DataError` unless `x` is a float batch (N, C, H, W) of the expected shape inside the bounds."""
        check_batch(x, self.input_shape, self.bounds)

    def __call__(self, x: Tensor) -> Tensor:
        """Logits (N, K) with gradients with respect to `x` (the white-box view), in batches."""
        x = x.to(self.device)
        if x.shape[0] <= self.batch_size:
            return self._forward(x)
        return torch.cat([self._forward(x[s]) for s in batch_slices(x.shape[0], self.batch_size)])

    @torch.inference_mode()
    def _logits_inference(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        return torch.cat([self._forward(x[s]) for s in batch_slices(x.shape[0], self.batch_size)])

    def logits(self, x: Tensor) -> Tensor:
        """Logits (N, K) without gradients (inference mode), in batches."""
        return self._logits_inference(x).clone()

    def predict(self, x: Tensor) -> Tensor:
        """Predicted labels (N,), int64, in batches."""
        return self.logits(x).argmax(dim=1)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, D): the input of the model's last `nn.Linear` layer (in module
        order), flattened, without gradients, in batches. What the feature-space detectors read
        (spectral signatures, activation clustering). Raises `ModelError` for a model without one."""
        return self._features_inference(x).clone()

    @torch.inference_mode()
    def _features_inference(self, x: Tensor) -> Tensor:
        last = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise ModelError("the model has no nn.Linear layer, so it has no penultimate features to read")
        seen: list[Tensor] = []
        handle = last[-1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].flatten(1)))
        try:
            x = x.to(self.device)
            for s in batch_slices(x.shape[0], self.batch_size):
                self._forward(x[s])
        finally:
            handle.remove()
        return torch.cat(seen) if seen else torch.zeros(0, last[-1].in_features, device=self.device)

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
        """A black-box view of this victim for a batch of `n` samples; see `Oracle`."""
        return Oracle(
            self, n, output=output, k=k, postprocess=postprocess, max_queries=max_queries, on_exhausted=on_exhausted
        )

    def _forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ModelError(
                f"the model must return logits of shape (N, K) for N={x.shape[0]} inputs; it returned {got} "
                "(for a model returning a tuple or dict, name the logits with --logits-key)"
            )
        if self._num_classes is None:
            self._num_classes = out.shape[1]
        elif out.shape[1] != self._num_classes:
            raise ModelError(f"the model returned {out.shape[1]} logits per input; expected {self._num_classes}")
        return out


def check_batch(x: Tensor, input_shape: tuple[int, int, int] | None, bounds: tuple[float, float]) -> None:
    """Raise `DataError` unless `x` is a float batch (N, C, H, W) of `input_shape` (when known) inside `bounds`:
    the one input check of every model, in-process or deployed."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"inputs must be a float tensor of shape (N, C, H, W); got {got}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"inputs have shape (C, H, W) = {tuple(x.shape[1:])} but the model expects {tuple(input_shape)}"
        )
    if x.numel() and (x.min() < bounds[0] - BOUNDS_TOLERANCE or x.max() > bounds[1] + BOUNDS_TOLERANCE):
        raise DataError(
            f"inputs must lie in the bounds {bounds}; got values in [{x.min().item():.4g}, "
            f"{x.max().item():.4g}] (scale images to [0, 1] or give the model's --bounds)"
        )
