"""`fg-uap`: the feature-gathering universal adversarial perturbation (Ye et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._universal import UniversalAttack, apply, fit_split, fooling_rate, project_v
from bastion.attacks.evasion.base import RunContext
from bastion.core.errors import ConfigError
from bastion.core.features import find_head, penultimate_features
from bastion.core.ops import batch_slices
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.victim import Victim

__all__ = ["FGUAP"]


@register_attack("fg-uap")
@dataclass(frozen=True, kw_only=True)
class FGUAP(UniversalAttack):
    """Feature-Gathering UAP. Ye, Cheng, Huang, "FG-UAP: Feature-Gathering Universal Adversarial
    Perturbation", IJCNN 2023, arXiv 2209.13113 (reference: yzx1213/FG-UAP, `utils.py`).

    Neural collapse view: the features a classifier feeds its last linear layer cluster by class, and
    a universal perturbation works when it gathers the features of all perturbed images around one
    direction, its own. FG-UAP optimises v directly for that: on each mini-batch X of the fit images,
    with h(.) the penultimate features (the input of the final `nn.Linear`, `bastion.core.features`),
    it minimises the mean cosine similarity cos(h(clip(X + v)), h(X)) between perturbed and clean
    features, by Adam on v (lr 0.02, weight decay 1e-5, batches of 32, the reference's settings), and
    projects v onto the ball after each step (L-inf: clip to +-xi; L2: rescale). With `target_class`
    the reference's targeted variant adds 0.1 * CE(f(X + v), target_class).

    Which epoch's v is kept: the reference (`attack` in its `utils.py`) measures the fooling rate on
    its validation loader after every epoch and keeps the v with the highest, then reports that same
    highest rate on that same validation set, so its selection sees the images it reports on. Here
    the images `_fit` receives are split by the seed into a validation part (`val_fraction`, a fifth
    by default) and a part that Adam fits v on; after each epoch the fooling rate of v on the
    validation part (all its images, correctly classified or not) is measured and the v with the
    highest kept (the earliest on a tie). The validation images never enter a gradient step, and in
    `run` both parts come from the fit images, so the held-out images that the reported fooling rate
    counts influence v in no way. With no validation image (`val_fraction=0`, or a single fit image)
    the last epoch's v is kept.

    Defaults: the reference's, except `epochs`: its 2 epochs are two passes over the ImageNet
    training set, tens of thousands of steps; on a crafting set of a thousand images that is 60
    steps, so the default is 20 epochs; and `val_fraction`, which the reference, given a separate
    validation set, has no need of. Unlike the reference, x + v is clipped to the input bounds.

    Fits the attack contract as `uap` does: v is fitted on a seeded `fit_fraction` of all the images
    and applied to every one; `result.extra` records `fooling_rate_heldout` (the papers' metric, over
    all held-out images), `accuracy_under_v_heldout`, `fooling_rate_fit`, `dominant_share`, v's norms
    (see `universal_records`), and the selection's `best_epoch`, `n_val` and `fooling_rate_val`.

    The paper reports higher ImageNet fooling rates than UAP and later methods at L-inf 10/255 on
    CNNs and DeiT. Measured (`benchmarks/universal_mnist5k.py`: the `small_cnn` fixture, standard
    recipe, on `mnist5k`; v fitted on 1,000 training images, measured on all 1,000 test images):
    fooling rate 24.8% at L-inf xi = 0.2 and 78.8% at 0.3 (accuracy under v 74.6% and 21.1%), against
    `uap`'s 21.2% and 67.7% and random +-xi sign patterns' 3.4% and 35.2% (docs/attacks.md,
    "Universal perturbations").
    """

    epochs: int = param(20, ge=1, help="passes over the fit images")
    batch_size: int = param(32, ge=1, help="fit images per Adam step")
    lr: float = param(0.02, gt=0, help="Adam's learning rate on v")
    weight_decay: float = param(1e-5, ge=0, help="Adam's weight decay on v")
    target_class: int | None = param(None, ge=0, help="targeted variant: the class every image should go to")
    target_weight: float = param(0.1, ge=0, help="weight of the targeted variant's cross-entropy")
    val_fraction: float = param(
        0.2, ge=0, lt=1, help="share of the fit images kept out of the steps to pick the best epoch on"
    )

    def _fit(
        self, victim: Victim, x: Tensor, gen: torch.Generator, ctx: RunContext | None
    ) -> tuple[Tensor, dict[str, Any]]:
        norm, xi = self.threat.norm, self.threat.eps
        head = find_head(victim.model, x[:1])
        k = head.layer.out_features
        if self.target_class is not None and self.target_class >= k:
            raise ConfigError(f"{self.name}: target_class must lie in [0, {k}); got {self.target_class}")
        steps, val = fit_split(x.shape[0], 1 - self.val_fraction, gen)  # disjoint: Adam never sees x[val]
        x_val, x = x[val.to(x.device)], x[steps.to(x.device)]
        with torch.no_grad():
            h0, _ = penultimate_features(victim, x, head)  # (N, D)
        clean_val = victim.predict(x_val) if val.numel() else val  # (V,)
        v = torch.zeros_like(x[:1]).requires_grad_(True)  # (1, C, H, W)
        opt = torch.optim.Adam([v], lr=self.lr, weight_decay=self.weight_decay)
        best_v, best_fr, best_epoch = v.detach().clone(), -1.0, 0
        for epoch in range(1, self.epochs + 1):
            order = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
            for s in batch_slices(x.shape[0], self.batch_size):
                b = order[s]
                with torch.enable_grad():
                    h1, logits = penultimate_features(victim, apply(x[b], v, victim.bounds), head)
                    loss = F.cosine_similarity(h1, h0[b], dim=1).mean()
                    if self.target_class is not None:
                        t = torch.full_like(b, self.target_class)
                        loss = loss + self.target_weight * F.cross_entropy(logits, t)
                    # the gradient goes to v alone, even for a victim whose parameters are not frozen
                    (v.grad,) = torch.autograd.grad(loss, v)
                opt.step()
                with torch.no_grad():
                    v.copy_(project_v(v, norm, xi))
            if val.numel():
                fr = fooling_rate(victim, x_val, v.detach(), clean_val)
                if fr > best_fr:
                    best_v, best_fr, best_epoch = v.detach().clone(), fr, epoch
            report(ctx.progress if ctx else None, "fg-uap", epoch, self.epochs)
        if not val.numel():  # nothing to select on: the last epoch's v
            best_v, best_epoch = v.detach().clone(), self.epochs
        records = {
            "best_epoch": best_epoch,
            "n_val": int(val.numel()),
            "fooling_rate_val": best_fr if val.numel() else None,
        }
        return best_v, records
