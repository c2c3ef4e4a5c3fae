"""8-bit weight quantization as the bit-flip papers use it, on a copy of the model.

Per layer, symmetric, 8-bit, two's complement (Rakin, He, Fan, "Bit-Flip Attack: Crushing Neural
Network with Progressive Bit Search", ICCV 2019; reference `elliothe/Neural_Network_Weight_Attack`,
`models/quantization.py` and `attack/data_conversion.py`): the weights of every convolution and linear
layer (not biases, not batch-norm) are stored as int8 codes `v = round(clamp(W / scale, -127, 127))`
with `scale = max|W| / 127` per layer, and the layer computes with `v * scale`. The scale is frozen
once quantized: a flip changes one code, never the scale (recomputing it would rescale the layer).
The T-BFA reference (`adnansirajrakin/T-BFA`, `module.py`) quantizes with twice that step,
`scale = 2 max|W| / 127`, leaving the codes within +-64 (headroom): `scheme="tbfa"`.

A code's bits are its two's-complement byte, `v = -128 b7 + sum_{i<7} 2^i b_i`: flipping bit i < 7
moves v by +2^i (0 -> 1) or -2^i (1 -> 0), and the sign bit moves it by -128 (0 -> 1) or +128
(1 -> 0), so 5 becomes -123. A flip may reach -128, which the quantizer never produces but the
memory can hold.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bastion.core.errors import ConfigError, ModelError
from bastion.core.results import BitFlip

__all__ = ["BIT_VALUES", "QuantLayer", "QuantizedModel", "bits_of", "flip_codes", "popcount", "quantize_int8"]

QUANTIZED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Scheme = Literal["bfa", "tbfa"]
_BIT_VALUES = (1, 2, 4, 8, 16, 32, 64, -128)
BIT_VALUES = torch.tensor(_BIT_VALUES, dtype=torch.float32)  # (8,): what setting bit i adds to the code
_MASKS = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)  # (8,)
_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)  # (256,)


def bits_of(codes: Tensor) -> Tensor:
    """The two's-complement bits of int8 codes (...,) as 0/1 int64 (..., 8), bit 0 first."""
    byte = codes.view(torch.uint8).to(torch.int64)[..., None]
    return (byte >> torch.arange(8, device=codes.device)) & 1


def flip_codes(codes: Tensor, bits: Tensor | int) -> Tensor:
    """The int8 codes with bit `bits` (an int, or one bit per code) flipped; a new tensor."""
    masks = _MASKS.to(codes.device)[torch.as_tensor(bits, device=codes.device)]
    return (codes.view(torch.uint8) ^ masks).view(torch.int8)


def popcount(codes: Tensor) -> int:
    """Number of set bits in the bytes of an int8 or uint8 tensor."""
    return int(_POPCOUNT.to(codes.device)[codes.view(torch.uint8).to(torch.int64)].sum())


@dataclass
class QuantLayer:
    """One quantized layer of a `QuantizedModel`.

    Attributes:
        name: the module's name in the model.
        module: the module (in the copy).
        scale: the layer's frozen step `max|W| / 127`, a 0-dim tensor of the weight's dtype.
        codes: the current int8 codes, shaped as the weight.
        original: the codes as quantized, before any flip.
    """

    name: str
    module: nn.Module
    scale: Tensor
    codes: Tensor
    original: Tensor

    @property
    def weight(self) -> Tensor:
        w = self.module.weight
        assert isinstance(w, Tensor)
        return w

    @property
    def numel(self) -> int:
        return self.codes.numel()

    def write(self, index: Tensor, codes: Tensor) -> None:
        """Set the weights at flat `index` (M,) to `codes * scale` (the codes themselves are not kept)."""
        with torch.no_grad():
            self.weight.view(-1)[index] = codes.to(self.weight.dtype) * self.scale


class QuantizedModel:
    """An 8-bit copy of a model whose weight bits can be flipped; the model given is never touched.

    Args:
        model: the float model (a `Victim`'s `model`); deep-copied, then every convolution and linear
            weight of the copy is quantized. Layers whose weights are all zero have no scale and stay
            as they are (they are not attacked).
        scheme: `bfa`, step `max|W| / 127` (the BFA reference); `tbfa`, `2 max|W| / 127` (T-BFA's).

    Attributes:
        model: the quantized copy, in eval mode. Only the quantized weights require gradients (a
            bit-flip attack differentiates with respect to them); every other parameter is frozen.
        layers: the quantized layers by module name, in module order.
    """

    def __init__(self, model: nn.Module, scheme: Scheme = "bfa") -> None:
        if scheme not in ("bfa", "tbfa"):
            raise ConfigError(f"quantization scheme must be 'bfa' or 'tbfa'; got {scheme!r}")
        if not isinstance(model, nn.Module):
            raise ModelError(f"quantization needs a torch.nn.Module; got {type(model).__name__}")
        try:
            self.model = copy.deepcopy(model).eval()
        except Exception as e:  # a module holding something that cannot be copied (a lock, a file)
            raise ModelError(f"the model cannot be copied for quantization ({type(e).__name__}: {e})") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers: dict[str, QuantLayer] = {}
        seen: set[int] = set()
        for name, m in self.model.named_modules():
            w = getattr(m, "weight", None)
            if not isinstance(m, QUANTIZED_TYPES) or not isinstance(w, Tensor) or id(w) in seen:
                continue
            seen.add(id(w))  # a weight shared by two modules is one tensor in memory: quantized once
            with torch.no_grad():
                if not w.is_contiguous():  # flips address the flattened weight
                    w.data = w.data.contiguous()
                top = w.detach().abs().max()
                if top == 0:
                    continue
                scale = top / 127 if scheme == "bfa" else 2 * top / 127
                codes = torch.round(torch.clamp(w / scale, -127, 127)).to(torch.int8)
                w.copy_(codes.to(w.dtype) * scale)
            w.requires_grad_(True)
            self.layers[name] = QuantLayer(name, m, scale, codes, codes.clone())
        if not self.layers:
            raise ModelError("the model has no convolution or linear layer with non-zero weights to quantize")

    @property
    def n_weights(self) -> int:
        return sum(layer.numel for layer in self.layers.values())

    def flip(self, layer: str, index: int, bit: int) -> BitFlip:
        """Flip one bit of one weight's code, for good; returns the flip with the code before and after."""
        q = self.layers[layer]
        flat = q.codes.view(-1)
        before = int(flat[index])
        flat[index] = flip_codes(flat[index : index + 1], bit)[0]
        q.write(torch.tensor([index], device=flat.device), flat[index : index + 1])
        return BitFlip(layer, int(index), int(bit), before, int(flat[index]))

    def flipped_codes(self, layer: str, index: Tensor, bits: Tensor) -> tuple[Tensor, Tensor]:
        """The distinct flat indices among `index` (M,) and their codes once every (index, bit) pair
        is flipped (two bits of one weight both flip), without applying them."""
        q = self.layers[layer]
        unique, inverse = torch.unique(index.to(q.codes.device), return_inverse=True)
        masks = torch.zeros(unique.numel(), dtype=torch.uint8, device=q.codes.device)
        for j, b in zip(inverse.tolist(), bits.tolist(), strict=True):  # M is a handful of bits
            masks[j] ^= 1 << b
        codes = (q.codes.view(-1)[unique].view(torch.uint8) ^ masks).view(torch.int8)
        return unique, codes

    @contextmanager
    def trial(self, layer: str, index: Tensor, bits: Tensor) -> Iterator[None]:
        """Flip the (index, bit) pairs of `layer` inside the block only: the weights are restored after."""
        q = self.layers[layer]
        unique, codes = self.flipped_codes(layer, index, bits)
        q.write(unique, codes)
        try:
            yield
        finally:
            q.write(unique, q.codes.view(-1)[unique])

    def hamming(self) -> int:
        """Bits that differ between the original and the current codes, over every layer."""
        return sum(popcount(q.codes ^ q.original) for q in self.layers.values())

    def dequantized(self, layer: str) -> Tensor:
        """The layer's current weights as the model computes with them: codes times scale."""
        q = self.layers[layer]
        return q.codes.to(q.weight.dtype) * q.scale


def quantize_int8(model: nn.Module, *, scheme: Scheme = "bfa") -> QuantizedModel:
    """An 8-bit copy of `model` (see `QuantizedModel`); `model` itself is left as it was."""
    return QuantizedModel(model, scheme)
