"""`reverse-sigmoid`: Lee et al.'s deceptive perturbation of the probabilities against model stealing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.core.params import param
from bastion.defenses.postprocess.base import PostProcess, log_probs, register_postprocess

__all__ = ["ReverseSigmoid"]

_CLIP = 1e-9  # probabilities are clipped to [1e-9, 1 - 1e-9] before the logit function


@register_postprocess("reverse-sigmoid")
@dataclass(frozen=True, kw_only=True)
class ReverseSigmoid(PostProcess):
    """Reverse sigmoid: subtract a sigmoid-shaped perturbation from the probabilities, then renormalise.

    Lee, Edwards, Molloy, Srivastava, "Defending Against NN Model Stealing Attacks Using Deceptive
    Perturbations", IEEE S&P Workshops 2019, arXiv 1806.00054. Each probability y becomes
    `y - beta * (sigmoid(gamma * logit(y)) - 1/2)`, clipped to [0, 1]; the row is renormalised to sum
    to 1 (the paper's alpha) and served as log-probabilities. `beta` sets the magnitude of the
    perturbation and `gamma` (data set and model specific, "convergence") its shape: for gamma < 1,
    sigmoid(gamma * logit(y)) is far steeper than y near 0 and 1, so small and large scores are pushed
    towards the middle and the gradient of the served scores points the wrong way, which poisons a
    surrogate trained on them. Defaults beta = 1, gamma = 0.1, those of ART's `ReverseSigmoid` (the
    paper tunes both per model); y is clipped to [1e-9, 1 - 1e-9] before logit(y), as ART does.

    The perturbation is not monotone: with the defaults, scores below about 0.03 are ordered backwards,
    and a near-zero score is served as about 0.39 before renormalisation, above a top score of 0.3. So
    the served argmax can differ from the model's when the model is unsure (`keeps_label = False`).
    With the defaults it is kept whenever the top probability exceeds 1/2: the map is increasing on
    [0.03, 1), so the top score is served above 1/2 and every score in [0.03, 1/2) below it, while a
    score under 0.03 is served below 0.03 + 0.39 (checked in the tests). Deterministic, no queries.
    """

    keeps_label: ClassVar[bool] = False

    beta: float = param(1.0, gt=0, help="magnitude of the perturbation")
    gamma: float = param(0.1, gt=0, help="convergence (shape) parameter of the sigmoid")

    def _apply(self, logits: Tensor, x: Tensor) -> Tensor:
        y = logits.double().softmax(dim=1)  # (N, K)
        yc = y.clamp(_CLIP, 1 - _CLIP)
        r = self.beta * ((self.gamma * (yc / (1 - yc)).log()).sigmoid() - 0.5)
        served = (y - r).clamp(0, 1)
        total = served.sum(dim=1, keepdim=True)
        # a row whose scores all clip to 0 (only for beta far above 1) is served as uniform
        served = torch.where(total > 0, served / total.clamp_min(torch.finfo(served.dtype).tiny), 1 / y.shape[1])
        return log_probs(served.to(logits.dtype))
