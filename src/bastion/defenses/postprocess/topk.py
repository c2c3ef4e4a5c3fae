"""`topk`: serve only the k largest scores; the others carry no information."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from bastion.core.params import param
from bastion.defenses.postprocess.base import PostProcess, keep_label, log_probs, register_postprocess

__all__ = ["TopK"]


@register_postprocess("topk")
@dataclass(frozen=True, kw_only=True)
class TopK(PostProcess):
    """Top-k: the probabilities of the k most likely classes survive, every other class gets the same score.

    The output restriction of deployed APIs (a "top-5" answer) and of the model-stealing defenses of
    Tramer et al. (USENIX Security 2016) and Orekondy et al. (ICLR 2020). The k largest probabilities
    are served unchanged (as log-probabilities); the other K - k classes share the remaining mass
    equally, (1 - sum of the top k) / (K - k) each, which is no larger than the k-th score and says
    nothing the top k do not already say. So in `probs` mode the oracle returns the top-k scores
    exactly and a flat remainder (the oracle's own `top-k` output mode zeroes the remainder instead,
    and renormalises nothing). Unlike that mode, this filter chains with other defenses and serves
    logits-reading attacks. The served argmax is the model's (ties broken towards it by one ulp).
    Default k = 1. Deterministic, no queries.
    """

    keeps_label: ClassVar[bool] = True

    k: int = param(1, ge=1, help="how many of the largest scores are served")

    def _apply(self, logits: Tensor, x: Tensor) -> Tensor:
        num_classes = logits.shape[1]
        p = logits.double().softmax(dim=1)  # (N, K)
        if self.k >= num_classes:
            return logits
        top = p.topk(self.k, dim=1)
        rest = ((1 - top.values.sum(dim=1, keepdim=True)) / (num_classes - self.k)).clamp_min(0)  # (N, 1)
        served = rest.expand_as(p).clone().scatter_(1, top.indices, top.values)
        return keep_label(log_probs(served.to(logits.dtype)), logits.argmax(dim=1))
