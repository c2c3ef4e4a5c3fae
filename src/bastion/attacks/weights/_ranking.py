"""Ranking weight bits by their gradient, the step both BFA and T-BFA take (reference
`elliothe/Neural_Network_Weight_Attack`, `attack/BFA.py`, `flip_bit`, steps 1-4; T-BFA's `attack.py`,
`BFA1.flip_bit`, with the mask inverted and every weight of the layer ranked)."""

from __future__ import annotations

from torch import Tensor

from bastion.attacks.weights.quantize import BIT_VALUES, bits_of

__all__ = ["bit_scores", "rank_bits"]


def bit_scores(grad: Tensor, codes: Tensor, *, raise_loss: bool) -> Tensor:
    """|bit-gradient| of every bit of some weights (W, 8), -1 where flipping the bit would move the loss
    the wrong way to first order.

    `grad` is dL/dv for the weights' int8 codes `codes` (both (W,)). The bit-gradient of bit i is
    `dL/dv * s_i` with `s_i = 2^i` and `s_7 = -128` (two's complement). Flipping a 0 bit adds `s_i` to
    the code, flipping a 1 bit subtracts it: a bit raises L when it is 0 with a positive bit-gradient
    or 1 with a negative one, and lowers it in the two other cases (a zero bit-gradient does neither).
    """
    bit_grad = grad[:, None] * BIT_VALUES.to(grad)  # (W, 8)
    wanted = bit_grad if raise_loss else -bit_grad
    bits = bits_of(codes)  # (W, 8)
    eligible = ((bits == 0) & (wanted > 0)) | ((bits == 1) & (wanted < 0))
    return bit_grad.abs().masked_fill(~eligible, -1.0)


def rank_bits(grad: Tensor, codes: Tensor, k: int, *, raise_loss: bool = True) -> tuple[Tensor, Tensor]:
    """The eligible bits (`bit_scores`) of a layer's `k` weights of largest |dL/dv|, as (flat weight
    index (E,), bit (E,)) by decreasing |bit-gradient| (ties in index order). `grad` and `codes` are
    the layer's, flattened (W,)."""
    k = min(k, grad.numel())
    top = grad.abs().topk(k).indices  # (k,)
    score = bit_scores(grad[top], codes[top], raise_loss=raise_loss).flatten()  # (8k,)
    order = score.argsort(descending=True, stable=True)[: int((score >= 0).sum())]
    return top[order // 8], order % 8
