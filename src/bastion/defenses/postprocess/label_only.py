"""`label-only`: serve the predicted class and nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.defenses.postprocess.base import PostProcess, log_probs, register_postprocess

__all__ = ["LabelOnly"]


@register_postprocess("label-only")
@dataclass(frozen=True, kw_only=True)
class LabelOnly(PostProcess):
    """Label only: the served scores are the one-hot vector of the model's prediction.

    The strongest output restriction (Tramer et al., USENIX Security 2016; the setting of
    decision-based attacks such as HopSkipJump): whatever the input, the answer is probability 1 for
    the predicted class and 0 elsewhere, served as log-probabilities (0 and log of the smallest
    normal float, finite). A score-based attack then sees a margin that never moves until the label
    flips; only decision-based attacks make progress. No parameters; deterministic, no queries.
    """

    keeps_label: ClassVar[bool] = True

    def _apply(self, logits: Tensor, x: Tensor) -> Tensor:
        one_hot = torch.zeros_like(logits).scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)
        return log_probs(one_hot)
