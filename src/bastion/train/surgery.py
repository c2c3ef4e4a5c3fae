"""Model surgery on copies: fine-tuning in the four ways of the watermark literature, and global
magnitude pruning. The model handed in is never changed.

Fine-tuning modes (Adi et al., USENIX Security 2018; reference adiyoss/WatermarkNN `fine-tune.py`):
    ftll: fine-tune the last layer only; every other parameter is frozen.
    ftal: fine-tune all layers.
    rtll: re-initialise the last layer, then train it alone.
    rtal: re-initialise the last layer, then train all layers.
The last layer is the model's last `nn.Linear` in module order (the layer `Victim.features` reads the
input of). The reference's fine-tuning optimiser is the default here: SGD, lr 0.01, momentum 0.9,
weight decay 5e-4, a constant rate, batches of 100 (it runs 20 epochs on CIFAR-10).

Pruning (`prune_global`): the smallest `fraction` of the weights of every convolution and linear
layer, ranked together by magnitude (biases and normalisation layers are left alone), set to zero.
Fine-tuning a pruned copy with its `masks` keeps the pruned weights at zero after every step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from bastion.core.errors import ConfigError, ModelError
from bastion.train.loop import BatchFn, Callback, Hooks, TrainConfig, TrainHistory, TrainState, fit

__all__ = ["FineTuneMode", "copy_model", "fine_tune", "last_linear", "prune_global", "sparsity"]

FineTuneMode = Literal["ftll", "ftal", "rtll", "rtal"]
_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with its own parameters, in eval mode, with gradients enabled again."""
    return copy.deepcopy(model).eval().requires_grad_(True)


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's last `nn.Linear` layer in module order: its classification layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("the model has no nn.Linear layer, so it has no last layer to fine-tune or re-initialise")
    return linears[-1]


def _reinit(layer: nn.Linear, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / layer.in_features**0.5  # nn.Linear's own initialisation, drawn from a seeded generator
    with torch.no_grad():
        layer.weight.copy_(torch.empty(layer.weight.shape).uniform_(-bound, bound, generator=gen))
        if layer.bias is not None:
            layer.bias.copy_(torch.empty(layer.bias.shape).uniform_(-bound, bound, generator=gen))


class _KeepPruned(Callback):
    """Puts the pruned weights back to zero after every optimiser step."""

    def __init__(self, model: nn.Module, masks: dict[str, Tensor]) -> None:
        params = dict(model.named_parameters())
        self.pairs = [(params[name], mask.to(params[name].device)) for name, mask in masks.items()]

    def on_step_end(self, state: TrainState, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            for p, mask in self.pairs:
                p.mul_(mask)


def fine_tune(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    mode: FineTuneMode = "ftal",
    epochs: int = 2,
    lr: float = 0.01,
    batch_size: int = 100,
    seed: int = 0,
    masks: dict[str, Tensor] | None = None,
    batch: BatchFn | None = None,
    config: TrainConfig | None = None,
) -> tuple[nn.Module, TrainHistory]:
    """A copy of `model` fine-tuned on (x, y) in `mode`; returns it in eval mode with the history.

    Args:
        model: the model (left unchanged).
        x, y: the fine-tuning data (N, C, H, W) in the model's bounds, labels (N,).
        mode: `ftll`, `ftal`, `rtll` or `rtal` (see the module's docstring).
        epochs, lr, batch_size: the optimisation (SGD with momentum 0.9 and weight decay 5e-4, constant rate).
        seed: seeds the re-initialised layer, shuffling and augmentation.
        masks: parameter name -> 0/1 mask of a pruned model (`prune_global`): pruned weights stay zero.
        batch: a per-batch edit of the training data (`Hooks.batch`): how a watermark's keys join
            every batch when fine-tuning embeds them.
        config: a whole `TrainConfig` instead of the defaults above (its seed is replaced by `seed`).
    """
    if mode not in get_args(FineTuneMode):
        raise ConfigError(f"fine-tuning mode must be one of {', '.join(get_args(FineTuneMode))}; got {mode!r}")
    tuned = copy_model(model)
    last = last_linear(tuned)
    if mode in ("rtll", "rtal"):
        _reinit(last, seed)
    if mode in ("ftll", "rtll"):
        tuned.requires_grad_(False)
        last.requires_grad_(True)
    cfg = config or TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        lr=lr,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="constant",
        augment="none",
    )
    cfg = replace(cfg, seed=seed)
    callbacks: Sequence[Callback] = () if masks is None else (_KeepPruned(tuned, masks),)
    history = fit(tuned, x, y, cfg, hooks=Hooks(callbacks=callbacks, batch=batch))
    return tuned.requires_grad_(True).eval(), history


def prune_global(model: nn.Module, fraction: float) -> tuple[nn.Module, dict[str, Tensor]]:
    """A copy of `model` with the `fraction` of smallest-magnitude convolution and linear weights,
    ranked over all those layers together, set to zero; and the 0/1 masks by parameter name."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the pruned fraction must lie in [0, 1); got {fraction}")
    pruned = copy_model(model)
    weights = {f"{name}.weight": m.weight for name, m in pruned.named_modules() if isinstance(m, _PRUNABLE)}
    if not weights:
        raise ModelError("the model has no convolution or linear weights to prune")
    magnitudes = torch.cat([w.detach().abs().flatten().cpu() for w in weights.values()])
    k = int(fraction * magnitudes.numel())
    masks = {}
    # rank by magnitude with ties broken by position, so exactly k weights go
    order = torch.argsort(magnitudes, stable=True)
    keep = torch.ones_like(magnitudes)
    keep[order[:k]] = 0.0
    start = 0
    with torch.no_grad():
        for name, w in weights.items():
            mask = keep[start : start + w.numel()].view_as(w).to(device=w.device, dtype=w.dtype)
            start += w.numel()
            w.mul_(mask)
            masks[name] = mask
    return pruned, masks


def sparsity(model: nn.Module) -> float:
    """The share of convolution and linear weights that are exactly zero."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, _PRUNABLE)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)
