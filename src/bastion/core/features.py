"""Penultimate-layer features of a classifier: the input of the final `nn.Linear`, read by a forward hook.

Feature-level attacks (FG-UAP) and detectors (OOD scores on features) need the representation the
classifier's last linear layer maps to logits. Architectures differ in how they reach it (a flatten,
global average pooling, a token), so the head is found by watching one forward pass: the last
`nn.Linear` to run, which must produce the K logits. A model whose logits do not come out of an
`nn.Linear` (a 1x1-convolution head, a functional head) gets a `ConfigError` saying so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.core.errors import ConfigError
from bastion.core.ops import batch_slices
from bastion.core.victim import Victim

__all__ = ["FeatureHead", "find_head", "penultimate_features"]


@dataclass(frozen=True)
class FeatureHead:
    """The final linear layer of a classifier and where it sits.

    Attributes:
        name: the layer's qualified name inside the model (`fc2`, `1.classifier.2`, ...).
        layer: the layer itself; its input is the penultimate feature vector.
        dim: D, the size of that feature vector.
    """

    name: str
    layer: nn.Linear
    dim: int


def find_head(model: nn.Module, example: Tensor) -> FeatureHead:
    """The last `nn.Linear` that runs in a forward pass of `model` on `example` (1 or more inputs).

    Raises:
        ConfigError: no `nn.Linear` runs, or the last one does not give the model's logits (its
            output size differs from the number of logits).
    """
    order: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _in, _out: order.append(names[id(mod)]))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.no_grad():
            logits = model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    kind = type(model).__name__
    if not order:
        raise ConfigError(
            f"cannot find penultimate features: no nn.Linear runs in a forward pass of the {kind} model; "
            "feature-level methods need a classifier whose logits come out of a final nn.Linear"
        )
    name = order[-1]
    layer = dict(model.named_modules())[name]
    assert isinstance(layer, nn.Linear)
    k = logits.shape[-1] if isinstance(logits, Tensor) else -1
    if layer.out_features != k:
        raise ConfigError(
            f"cannot find penultimate features: the last nn.Linear of the {kind} model ({name!r}) gives "
            f"{layer.out_features} outputs but the model gives {k} logits; its head is not a final nn.Linear"
        )
    return FeatureHead(name=name, layer=layer, dim=layer.in_features)


def penultimate_features(victim: Victim, x: Tensor, head: FeatureHead | None = None) -> tuple[Tensor, Tensor]:
    """(features (N, D), logits (N, K)) of `x` through the victim, with gradients with respect to `x`.

    The features are the input of the final linear layer (`head`, found with `find_head` when not
    given), flattened per sample; inputs are sent in the victim's batches.
    """
    if head is None:
        head = find_head(victim.model, x)
    feats: list[Tensor] = []
    hook = head.layer.register_forward_pre_hook(lambda _mod, args: feats.append(args[0].flatten(1)))
    try:
        logits = [victim(x[s]) for s in batch_slices(x.shape[0], victim.batch_size)]
    finally:
        hook.remove()
    if len(feats) != len(logits):  # pragma: no cover - a head that runs twice per forward
        raise ConfigError(f"the layer {head.name!r} runs {len(feats)} times for {len(logits)} forward passes")
    return torch.cat(feats), torch.cat(logits)
