"""`craft-me`: split-learning extraction on inputs crafted against the server (Li et al., arXiv 2303.08581).

Reference `zlijingtao/SFL-MEA` (`old-commit`) `attacks/model_extraction_attack.py`, `prepare_steal_attack`,
`Craft_option`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.extraction._sfl_base import Attacker, SplitExtractionAttack, ce_epoch
from bastion.core.errors import ConfigError
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report

__all__ = ["CraftME"]


@register_attack("craft-me")
@dataclass(frozen=True, kw_only=True)
class CraftME(SplitExtractionAttack):
    """Craft-ME: craft inputs the server labels c, then train Ŝ on them. No data.

    For each class c, images start uniform in [0, 1] and follow Adam (lr 0.1, AMSGrad, eps 1e-3, as the
    reference) on `CE(S(C(x)), c)` for `craft_steps` steps: each step sends z = C(x) with label c (one
    gradient query per image per step) and back-propagates the returned dL/dz through the attacker's C.
    floor(B / (steps K)) images per class; when that is 0, one image per class with floor(B / K) steps
    (reference). Bastion keeps the images in [0, 1] (clipped after each step; the reference crafts in
    normalised space, unclipped) and crafts all images of a budget as one batch (Adam is per-element, so
    this equals crafting them one at a time). Ŝ trains with CE on (C(x), c), no augmentation.
    """

    source = "crafted inputs (no data)"

    craft_steps: int = param(50, ge=1, help="Adam steps per crafted image (reference: 50)")
    craft_lr: float = param(0.1, gt=0, help="Adam learning rate of the crafting (reference: 0.1)")

    def _plan(self, num_classes: int) -> tuple[int, int]:
        """(images per class, steps per image)."""
        per_class = self.budget // (self.craft_steps * num_classes)
        if per_class:
            return per_class, self.craft_steps
        if self.budget // num_classes == 0:
            raise ConfigError(
                f"craft-me needs a budget of at least one query per class ({num_classes}); got {self.budget}"
            )
        return 1, self.budget // num_classes

    def planned_queries(self, num_classes: int, n_own: int, n_aux: int) -> int:
        per_class, steps = self._plan(num_classes)
        return num_classes * per_class * steps

    def _collect(self, atk: Attacker, gen: torch.Generator, progress: ProgressFn | None) -> tuple[Tensor, Tensor]:
        per_class, steps = self._plan(atk.num_classes)
        y = torch.arange(atk.num_classes, device=atk.device).repeat_interleave(per_class)  # (M,)
        x = torch.rand(y.shape[0], *atk.input_shape, generator=gen).to(atk.device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.craft_lr, amsgrad=True, eps=1e-3)
        for step in range(1, steps + 1):
            grads = []
            for i in range(0, x.shape[0], 500):
                xb = x[i : i + 500]
                with torch.enable_grad():
                    z = atk.client(xb)
                    g = atk.oracle.grad(z.detach(), y[i : i + 500])  # dCE/dz per image
                    (gx,) = torch.autograd.grad(z, xb, grad_outputs=g)
                grads.append(gx)
            opt.zero_grad(set_to_none=True)
            x.grad = torch.cat(grads)
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            report(progress, "craft", step, steps)
        return x.detach(), y

    def _epoch(
        self, surrogate: nn.Module, opt: torch.optim.Optimizer, atk: Attacker, data: object, gen: torch.Generator
    ) -> float:
        x, y = data  # type: ignore[misc]
        return ce_epoch(surrogate, opt, atk, x, y, gen, batch_size=self.batch_size, flip=None)
