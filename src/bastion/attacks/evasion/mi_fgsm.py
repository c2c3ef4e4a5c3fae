"""`mi-fgsm`: the momentum iterative fast gradient sign method (L-inf), and its L2 form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._gradient import loss_and_grad, normalize_l2
from bastion.attacks.evasion._losses import LossName, make_loss, misclassified
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.ops import project
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.victim import Victim

__all__ = ["MIFGSM"]


@register_attack("mi-fgsm")
@dataclass(frozen=True, kw_only=True)
class MIFGSM(EvasionAttack):
    """Momentum iterative FGSM. Dong, Liao, Pang, Su, Zhu, Hu, Li, "Boosting Adversarial Attacks with
    Momentum", CVPR 2018, arXiv 1710.06081.

    Each step accumulates the L1-normalised gradient into a velocity, `g <- mu * g + grad / ||grad||_1`,
    and moves along its sign, `x <- P(x + alpha * sign(g))` (L-inf; the paper's L2 form moves
    `alpha * g / ||g||_2`), `P` the projection onto the eps-ball and the bounds. The momentum
    stabilises the direction across steps, which makes the examples transfer better to other models
    than I-FGSM's. Targeted: the steps descend the loss of the target class.

    Defaults are the paper's: 10 steps, alpha = eps / steps, decay mu = 1.0, cross-entropy, no random
    start. Every sample runs all steps (the paper's method: stopping at the first misclassified
    iterate leaves examples barely across the surrogate's boundary, which transfer worse);
    `early_stop=True` keeps the first misclassified iterate, for a cheaper white-box evaluation.
    Measured on `digits` (`small_cnn`, tests/attacks/evasion/test_mi_fgsm.py and test_transfer.py):
    white-box at L-inf 0.1, robust accuracy 57.5% beside PGD-10's 55%; transferred at L-inf 0.2 from
    a `small_cnn` trained with seed 1 to one trained with seed 0, success 89% beside FGSM's 87% and
    early-stopped PGD-40's 33%. The paper reports the same ordering on ImageNet Inception models.
    """

    steps: int = param(10, ge=1, help="iterations T")
    decay: float = param(1.0, ge=0, help="momentum decay factor mu")
    alpha: float | None = param(None, gt=0, help="step size; default eps / steps")
    loss: LossName = param("ce", help="loss to ascend: ce or margin")
    early_stop: bool = param(False, help="a sample leaves the active set at its first misclassified iterate")

    def _perturb(self, victim: Victim, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        norm, eps, bounds = self.threat.norm, self.threat.eps, self.threat.bounds
        alpha = self.alpha if self.alpha is not None else eps / self.steps
        target = ctx.target_labels
        x_best = x.clone()
        active = torch.arange(x.shape[0], device=x.device)  # samples still attacked
        xk = x.clone()
        g = torch.zeros_like(x)  # (N, C, H, W) the velocity
        for step in range(self.steps):
            ya, ta = y[active], (target[active] if target is not None else None)
            logits, _, grad = loss_and_grad(victim, xk, make_loss(self.loss, ya, ta))
            if self.early_stop:
                hit = misclassified(logits, ya, ta)
                if bool(hit.any()):
                    x_best[active[hit]] = xk[hit]
                    keep = ~hit
                    active, xk, grad, g = active[keep], xk[keep], grad[keep], g[keep]
                    if active.numel() == 0:
                        break
            l1 = grad.flatten(1).abs().sum(1).view(-1, *([1] * (x.dim() - 1)))
            g = self.decay * g + grad / (l1 + 1e-12)
            move = g.sign() if norm == "linf" else normalize_l2(g)
            xk = project(xk + alpha * move, x[active], norm, eps, bounds)
            report(ctx.progress, "mi-fgsm", step + 1, self.steps)
        x_best[active] = xk
        return x_best
