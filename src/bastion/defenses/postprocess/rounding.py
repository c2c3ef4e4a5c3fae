"""`round`: serve the probabilities rounded to a few decimals, which hides small score changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from bastion.core.params import param
from bastion.defenses.postprocess.base import PostProcess, keep_label, log_probs, register_postprocess

__all__ = ["Round"]


@register_postprocess("round")
@dataclass(frozen=True, kw_only=True)
class Round(PostProcess):
    """Rounding: the probabilities rounded to `decimals` decimals, served as logits log(p~).

    The classic output-perturbation baseline of the model-stealing literature (Tramer et al., "Stealing
    Machine Learning Models via Prediction APIs", USENIX Security 2016, section 7) and of the AAA
    paper's comparison: a score change smaller than half a unit of the last decimal is invisible, so
    random search sees flat plateaus. A probability that rounds to 0 is served as log of the smallest
    normal float (finite). In `logits` mode an attacker reads log(p~); in `probs` mode the oracle's
    softmax serves p~ / sum(p~), the rounded scores renormalised: equal rounded scores stay equal,
    every change below the rounding step stays hidden, and the digits are not exactly k decimals
    (the sum of rounded scores is rarely 1). When the top scores round to the same value, the
    model's own prediction is kept by one ulp (a deployed API states its label beside the scores),
    so the served argmax always equals the model's. Default: 2 decimals. Deterministic, no queries.
    """

    keeps_label: ClassVar[bool] = True

    decimals: int = param(2, ge=0, le=8, help="decimals the probabilities are rounded to")

    def _apply(self, logits: Tensor, x: Tensor) -> Tensor:
        p = logits.double().softmax(dim=1).round(decimals=self.decimals)
        return keep_label(log_probs(p.to(logits.dtype)), logits.argmax(dim=1))
