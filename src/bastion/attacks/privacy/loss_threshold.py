"""`loss-threshold`: membership inference from the model's loss on a candidate (Yeom et al., CSF 2018)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.privacy.base import MembershipAttack, log_probs_and_complements

__all__ = ["LossThreshold"]


@register_attack("loss-threshold")
@dataclass(frozen=True, kw_only=True)
class LossThreshold(MembershipAttack):
    """The loss-threshold attack. Yeom, Giacomelli, Fredrikson, Jha, "Privacy Risk in Machine Learning:
    Analyzing the Connection to Overfitting", IEEE CSF 2018, arXiv 1709.01604.

    A model fits its training images better than others, so a low cross-entropy loss `-log p_y(x)`
    betrays a member. Score `s = log p_y(x)` (minus the loss; higher = more likely a member), one query
    per candidate. The paper's attack decides "member" when the loss is below the model's average
    training loss, which its adversary is assumed to know; the result records that decision's balanced
    accuracy (`extra.yeom_threshold`, `extra.yeom_balanced_accuracy`, from the members' own mean loss)
    beside the threshold-free metrics. A confidence-based attack (`p_y`) ranks the candidates exactly
    as this one does (`p_y` is increasing in `log p_y`), so it gives the same ROC and is not repeated.

    Reproduces: Yeom et al. report an advantage growing with the generalisation gap; on an overfitted
    `small_cnn` (`benchmarks/membership.py`) bastion's AUROC is measured beside IBM ART's attacks.
    """

    def _score(self, logits: Tensor, y: Tensor) -> Tensor:
        log_p, _ = log_probs_and_complements(logits)
        return log_p.gather(1, y[:, None]).squeeze(1)  # (N,)

    def _extra(self, scores: Tensor, member: Tensor) -> dict[str, object]:
        threshold = float(scores[member].mean())  # minus the average training loss
        predicted = scores >= threshold
        tpr = float(predicted[member].double().mean())
        fpr = float(predicted[~member].double().mean()) if bool((~member).any()) else 0.0
        return {"yeom_threshold": threshold, "yeom_balanced_accuracy": (1 + tpr - fpr) / 2}
