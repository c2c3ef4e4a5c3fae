"""`fgsm`: the fast gradient sign method (L-inf) and its L2 form, the fast gradient method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._gradient import loss_and_grad, normalize_l2
from bastion.attacks.evasion._losses import LossName, make_loss
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.params import param
from bastion.core.threat import Norm
from bastion.core.victim import Victim

__all__ = ["FGSM"]


@register_attack("fgsm")
@dataclass(frozen=True, kw_only=True)
class FGSM(EvasionAttack):
    """One gradient step of size eps. Goodfellow, Shlens, Szegedy, arXiv 1412.6572.

    L-inf: `x_adv = clip(x + eps * sign(grad))`; L2: `x + eps * grad / ||grad||_2`; targeted: a step
    down the loss of the target class. No random start (the original method); FGSM with a random
    start is the `fgsm-rs` training recipe. The benchmark `benchmarks/evasion_peers.py` checks robust
    accuracy within 1 point of torchattacks and ART on the same images.
    """

    norms: ClassVar[tuple[Norm, ...]] = ("linf", "l2")

    loss: LossName = param("ce", help="loss whose gradient gives the step: ce or margin")

    def _perturb(self, victim: Victim, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        _, _, grad = loss_and_grad(victim, x, make_loss(self.loss, y, ctx.target_labels))
        step = grad.sign() if self.threat.norm == "linf" else normalize_l2(grad)
        return x + self.threat.eps * step
