"""`random-flip`: random weight-bit flips, the baseline every bit-flip attack is measured against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.weights.base import BitFlipAttack, Proposal
from bastion.attacks.weights.quantize import QuantizedModel
from bastion.core.params import param
from bastion.core.victim import Victim

__all__ = ["RandomFlip"]


@register_attack("random-flip")
@dataclass(frozen=True, kw_only=True)
class RandomFlip(BitFlipAttack):
    """Random bit flips in the 8-bit weights: what a budget of flips costs when nobody aims them. The
    BFA paper's baseline (Rakin, He, Fan, ICCV 2019: random flips barely move the accuracy, where BFA's
    crush it); reference `elliothe/Neural_Network_Weight_Attack`, `attack/random_attack.py`.

    `draw="bits"` (default) draws each flip uniformly among all the weight bits of the model, as a
    random fault in memory would land; `draw="layer"` draws a layer uniformly, then a weight and a bit in
    it, as the reference does (small layers get more than their share of flips). Flips are distinct
    bits (drawn again on a repeat), so the Hamming distance equals the number of flips. Needs no image
    and no gradient.

    Measured: 30 random flips leave the shipped `small_cnn` on `mnist5k` (8-bit) at its quantized
    accuracy on 500 test images, with either draw (`tests/attacks/weights`).
    """

    draw: Literal["bits", "layer"] = param("bits", help="bits: uniform over all weight bits; layer: a layer first")

    def _prepare(
        self, q: QuantizedModel, victim: Victim, x_attack: Tensor | None, y_attack: Tensor | None, gen: torch.Generator
    ) -> object:
        return set()  # the (layer, index, bit) already flipped

    def _step(self, q: QuantizedModel, state: object, budget: int, gen: torch.Generator) -> Proposal:
        assert isinstance(state, set)
        names = list(q.layers)
        sizes = torch.tensor([q.layers[n].numel for n in names])
        ends = sizes.cumsum(0)  # (L,)
        if len(state) >= int(ends[-1]) * 8:  # every bit is flipped already (a toy model)
            return []
        while True:
            if self.draw == "bits":
                pos = int(torch.randint(int(ends[-1]) * 8, (1,), generator=gen))
                weight, bit = divmod(pos, 8)
                i = int(torch.searchsorted(ends, torch.tensor(weight), right=True))
                index = weight - (int(ends[i - 1]) if i else 0)
            else:
                i = int(torch.randint(len(names), (1,), generator=gen))
                index = int(torch.randint(int(sizes[i]), (1,), generator=gen))
                bit = int(torch.randint(8, (1,), generator=gen))
            flip = (names[i], index, bit)
            if flip not in state:
                state.add(flip)
                return [flip]
