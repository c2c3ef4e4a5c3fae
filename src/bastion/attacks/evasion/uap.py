"""`uap`: the universal adversarial perturbation of Moosavi-Dezfooli et al., built from DeepFool steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._universal import UniversalAttack, apply, fooling_rate, project_v
from bastion.attacks.evasion.base import RunContext
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.victim import Victim

__all__ = ["UAP"]


@register_attack("uap")
@dataclass(frozen=True, kw_only=True)
class UAP(UniversalAttack):
    """Universal adversarial perturbation. Moosavi-Dezfooli, Fawzi, Fawzi, Frossard, "Universal
    adversarial perturbations", CVPR 2017, arXiv 1610.08401 (reference: LTS4/universal).

    One perturbation v, of norm at most xi = the threat model's eps, for all images. Starting from
    v = 0, each pass visits the fit images in a seeded random order; for an image whose label v does
    not change yet, DeepFool (L2, the `df_classes` most likely classes at x + v, overshoot 0.02, at
    most `df_steps` = 10 iterations) finds a minimal r with k(x + v + r) != k(x + v), and if it
    converged (fewer than df_steps - 1 iterations, the reference's test) v <- Proj(v + r) (L-inf: clip
    to +-xi; L2: rescale to norm <= xi). Passes stop once the fooling rate on the fit images reaches
    1 - delta (delta = 0.2) or after `max_passes`. Unlike the reference, x + v is clipped to the input
    bounds wherever v is applied (DeepFool starts from clip(x + v), but its own iterates are not
    clipped, as in the reference: clipping them stalls it on MNIST's black background); the
    reference's L2 projection rescales v to norm exactly xi, here only down to it.

    How it fits the attack contract: `run(victim, x, y)` splits all the images, correctly classified
    or not, by the seed into a fit part (`fit_fraction`, half by default) and a held-out part, fits v
    on the fit part (DeepFool moves away from the predicted label, as in the reference, so labels are
    never used), and returns clip(x + v) for every image. `result.extra` records the paper's metric,
    `fooling_rate_heldout` (share of all held-out images whose predicted label v changes), the
    accuracy under v on them (`accuracy_under_v_heldout`, beside `clean_accuracy_heldout`),
    `fooling_rate_fit`, `passes`, `dominant_share` and v's norms (`v_linf`, `v_l2`); see
    `universal_records`. `fit(victim, x)` returns v itself.

    The paper reports ImageNet validation fooling rates of 78-93% at L-inf xi = 10/255 (its Table 1).
    Measured (`benchmarks/universal_mnist5k.py`: the `small_cnn` fixture, standard recipe, on
    `mnist5k`; v fitted on 1,000 training images, measured on all 1,000 test images): fooling rate
    21.2% at L-inf xi = 0.2 and 67.7% at 0.3 (accuracy under v 78.6% and 32.1%), against 3.4% and
    35.2% for random +-xi sign patterns (docs/attacks.md, "Universal perturbations").
    """

    delta: float = param(0.2, gt=0, lt=1, help="stop once the fooling rate on the fit images reaches 1 - delta")
    max_passes: int = param(5, ge=1, help="passes over the fit images at most")
    overshoot: float = param(0.02, ge=0, help="DeepFool's overshoot")
    df_steps: int = param(10, ge=2, help="DeepFool iterations at most (a non-converged step is skipped)")
    df_classes: int = param(10, ge=2, help="DeepFool's candidate classes: the most likely at x + v")

    def _fit(
        self, victim: Victim, x: Tensor, gen: torch.Generator, ctx: RunContext | None
    ) -> tuple[Tensor, dict[str, Any]]:
        norm, xi = self.threat.norm, self.threat.eps
        clean = victim.predict(x)  # (N,)
        v = torch.zeros_like(x[:1])  # (1, C, H, W)
        passes = 0
        for passes in range(1, self.max_passes + 1):
            order = torch.randperm(x.shape[0], generator=gen, device=gen.device).tolist()
            # the algorithm is sequential by design: each image sees the v its predecessors built
            for i in order:
                r, converged = self._deepfool(victim, apply(x[i : i + 1], v, victim.bounds), int(clean[i]))
                if converged:
                    v = project_v(v + r, norm, xi)
            report(ctx.progress if ctx else None, "uap", passes, self.max_passes)
            if fooling_rate(victim, x, v, clean) >= 1 - self.delta:
                break
        return v, {"passes": passes}

    def _deepfool(self, victim: Victim, x0: Tensor, label: int) -> tuple[Tensor, bool]:
        """DeepFool's minimal L2 perturbation r of `x0` (1, C, H, W) away from `label`, and whether it
        converged. Returns r = 0 (and False) when `x0` is not classified as `label` (v fools it already).

        Moosavi-Dezfooli, Fawzi, Frossard, arXiv 1511.04599: at each iterate, for every candidate k
        (the most likely classes at x0 but the label), w_k = grad(f_k - f_label), f'_k = f_k - f_label;
        step to the nearest linearised boundary, |f'_k| w_k / ||w_k||^2, accumulated in r_tot; the
        next iterate is x0 + (1 + overshoot) r_tot.
        """
        z0 = victim.logits(x0)[0]  # (K,)
        if int(z0.argmax()) != label:
            return torch.zeros_like(x0), False
        top = z0.topk(min(self.df_classes, z0.numel())).indices
        cand = torch.cat([top.new_tensor([label]), top[top != label]])  # (M,) candidates, label first
        r_tot = torch.zeros_like(x0)
        xk = x0
        for it in range(self.df_steps):
            # one forward of M copies gives the M candidate logits' gradients in one backward
            xr = xk.expand(cand.numel(), *xk.shape[1:]).clone().requires_grad_(True)
            with torch.enable_grad():
                z = victim(xr)  # (M, K)
                if it > 0 and int(z[0].argmax()) != label:
                    return (1 + self.overshoot) * r_tot, it < self.df_steps - 1
                (grads,) = torch.autograd.grad(z.gather(1, cand[:, None]).sum(), xr)  # (M, C, H, W)
            f = (z[0, cand[1:]] - z[0, label]).detach()  # (M-1,)
            w = grads[1:] - grads[:1]  # (M-1, C, H, W)
            wn = w.flatten(1).norm(p=2, dim=1) + 1e-12
            pert = f.abs() / wn
            j = int(pert.argmin())
            r_tot = r_tot + (pert[j] / wn[j]) * w[j : j + 1]
            xk = x0 + (1 + self.overshoot) * r_tot
        # df_steps updates without a label change: the reference's test (fewer than df_steps - 1) fails
        return (1 + self.overshoot) * r_tot, False
