"""`pgd`: projected gradient descent (L-inf and L2), with random start, restarts and an active set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._gradient import loss_and_grad, normalize_l2, random_start
from bastion.attacks.evasion._losses import LossName, make_loss, misclassified
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.ops import project
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.victim import Victim

__all__ = ["PGD"]


@register_attack("pgd")
@dataclass(frozen=True, kw_only=True)
class PGD(EvasionAttack):
    """Projected gradient descent. Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", arXiv 1706.06083.

    Each step: `x <- P(x + alpha * sign(grad))` (L-inf) or `P(x + alpha * grad / ||grad||_2)` (L2),
    `P` the projection onto the eps-ball and the bounds. The start is uniform in the L-inf ball, or
    uniform in the L2 ball (Gaussian direction, radius eps * U^(1/d); torchattacks draws the radius
    as eps * U instead). Targeted: the step descends the loss of the target class.

    Defaults: 40 steps (Madry's MNIST training attack), alpha = 2.5 * eps / steps (the paper's rule,
    0.01875 at eps 0.3 and 40 steps; Madry's MNIST config uses 0.01), one restart, cross-entropy.
    With `early_stop` a sample keeps the first iterate that is misclassified and leaves the active
    set (it costs nothing more); without it every sample runs all steps and keeps its last iterate
    (torchattacks' and ART's semantics, used for the peer comparison). Restart r runs only on samples
    still robust after restart r - 1.

    Reproduces: robust accuracy within 1 point of torchattacks and ART on the same images and
    parameters, on a standard and a `pgd-at` `small_cnn` on `mnist5k` (`benchmarks/evasion_peers.py`).
    """

    steps: int = param(40, ge=1, help="gradient steps per restart")
    alpha: float | None = param(None, gt=0, help="step size; default 2.5 * eps / steps")
    restarts: int = param(1, ge=1, help="random restarts (each on the samples still robust)")
    loss: LossName = param("ce", help="loss to ascend: ce or margin")
    random_start: bool = param(True, help="start from a uniform point of the eps-ball")
    early_stop: bool = param(True, help="a sample leaves the active set at its first misclassified iterate")

    def _perturb(self, victim: Victim, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        norm, eps = self.threat.norm, self.threat.eps
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
        target = ctx.target_labels
        x_best = x.clone()
        robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        done, total = 0, self.steps * self.restarts
        for restart in range(self.restarts):
            idx = robust.nonzero().squeeze(1)  # the samples this restart attacks
            if idx.numel() == 0:
                break
            x0, y0 = x[idx], y[idx]
            t0 = target[idx] if target is not None else None
            xk = random_start(x0, norm, eps, ctx.gen) if self.random_start else x0.clone()
            xk = project(xk, x0, norm, eps, self.threat.bounds)
            active = torch.arange(idx.numel(), device=x.device)  # positions in idx still attacked
            for _ in range(self.steps):
                ya, ta = y0[active], (t0[active] if t0 is not None else None)
                logits, _, grad = loss_and_grad(victim, xk, make_loss(self.loss, ya, ta))
                if self.early_stop:
                    hit = misclassified(logits, ya, ta)
                    if bool(hit.any()):
                        x_best[idx[active[hit]]] = xk[hit]
                        robust[idx[active[hit]]] = False
                        keep = ~hit
                        active, xk, grad = active[keep], xk[keep], grad[keep]
                        if active.numel() == 0:
                            break
                step = grad.sign() if norm == "linf" else normalize_l2(grad)
                xk = project(xk + alpha * step, x0[active], norm, eps, self.threat.bounds)
                done += 1
                report(ctx.progress, "pgd", done, total)
            if active.numel():
                # the last iterate of the samples never caught misclassified mid-run; which of them
                # succeeded matters only when another restart follows (the base re-measures at the end)
                x_best[idx[active]] = xk
                if restart + 1 < self.restarts:
                    final = misclassified(victim.logits(xk), y0[active], t0[active] if t0 is not None else None)
                    robust[idx[active]] = ~final
        return x_best
