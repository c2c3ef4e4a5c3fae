"""`modified-entropy`: membership inference from the modified entropy of the answer (Song & Mittal, 2021)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.privacy.base import MembershipAttack, log_probs_and_complements

__all__ = ["ModifiedEntropy"]


@register_attack("modified-entropy")
@dataclass(frozen=True, kw_only=True)
class ModifiedEntropy(MembershipAttack):
    """The modified-entropy (Mentr) attack. Song & Mittal, "Systematic Evaluation of Privacy Risks of
    Machine Learning Models", USENIX Security 2021, arXiv 2003.10595; reference
    `inspire-group/membership-inference-evaluation` (`MIA_evaluate.py`, `_m_entr_comp`).

    `Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)`: small when the answer is
    confident *and* correct, large when it is confidently wrong (unlike the plain entropy). Score
    `s = -Mentr` (higher = more likely a member), one query per candidate. The reference clips the
    probabilities at 1e-30 before the logarithms; bastion computes `log p` and `log(1 - p)` from the
    logits in float64, which needs no clip and keeps confident answers apart. The paper pairs the score
    with class-dependent thresholds fitted on shadow models; with the threshold-free metrics reported
    here (AUROC, TPR at low FPR) the score is what is measured.

    Reproduces: the paper's ordering on overfitted models, Mentr at least as strong as entropy and
    confidence; `benchmarks/membership.py` measures it on an overfitted `small_cnn` beside IBM ART.
    """

    def _score(self, logits: Tensor, y: Tensor) -> Tensor:
        log_p, log_q = log_probs_and_complements(logits)
        p = log_p.exp()
        own = y[:, None]
        true_term = (1 - p.gather(1, own)) * log_p.gather(1, own)  # (N, 1): (1 - p_y) log p_y
        others = (p * log_q).scatter(1, own, 0.0).sum(dim=1, keepdim=True)  # sum over i != y of p_i log(1 - p_i)
        return (true_term + others).squeeze(1)
