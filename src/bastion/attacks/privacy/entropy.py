"""`entropy`: membership inference from the entropy of the model's answer (Salem et al., NDSS 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.privacy.base import MembershipAttack, log_probs_and_complements

__all__ = ["Entropy"]


@register_attack("entropy")
@dataclass(frozen=True, kw_only=True)
class Entropy(MembershipAttack):
    """The prediction-entropy attack: training images get peaked, low-entropy answers. Salem et al.,
    NDSS 2019 (arXiv 1806.01246), as benchmarked by Song & Mittal, "Systematic Evaluation of Privacy
    Risks of Machine Learning Models", USENIX Security 2021, arXiv 2003.10595.

    Score `s = -H(p) = sum_i p_i log p_i` (higher = more likely a member); needs no label, one query
    per candidate. Its blind spot, which `modified-entropy` fixes: a confidently *wrong* answer also has
    low entropy, and that points to a non-member.
    """

    def _score(self, logits: Tensor, y: Tensor) -> Tensor:
        log_p, _ = log_probs_and_complements(logits)
        return (log_p.exp() * log_p).sum(dim=1)  # (N,)
