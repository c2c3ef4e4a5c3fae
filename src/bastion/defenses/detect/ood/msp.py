"""`msp`: the maximum softmax probability as an OOD score (Hendrycks & Gimpel, ICLR 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from bastion.core.victim import Victim
from bastion.defenses.detect.ood.base import OODDetector, register_detector

__all__ = ["MSP"]


@register_detector("msp")
@dataclass(frozen=True, kw_only=True)
class MSP(OODDetector):
    """Maximum softmax probability. Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
    Out-of-Distribution Examples in Neural Networks", ICLR 2017, arXiv 1610.02136.

    Score `max_k softmax(z)_k`: a classifier tends to answer in-distribution inputs more confidently.
    No parameters and no fitting. The paper's MNIST experiments (its Table 2) use Omniglot, notMNIST,
    CIFAR-10bw, Gaussian and uniform noise as OOD sets; `benchmarks/ood.py` gives bastion's AUROC and
    FPR at 95% TPR on `mnist5k` against the sets `bastion.data.ood` makes.
    """

    def _score(self, victim: Victim, x: Tensor, state: Any) -> Tensor:
        return victim.logits(x).softmax(dim=1).amax(dim=1)
