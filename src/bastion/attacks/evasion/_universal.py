"""What the universal-perturbation attacks share: the attack contract around fitting one v (the
fit/held-out split and the records), applying v to a batch, and the L-p projection of v."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.ops import lp_norms
from bastion.core.params import param
from bastion.core.random import make_generator
from bastion.core.victim import Victim

__all__ = ["UniversalAttack", "apply", "fit_split", "fooling_rate", "project_v", "universal_records"]


@dataclass(frozen=True, kw_only=True)
class UniversalAttack(EvasionAttack):
    """An attack that fits one perturbation v for all images (subclasses write `_fit`).

    `run(victim, x, y)` hands it every image, correctly classified or not (`universal`), as the papers
    apply v to every image: it splits them by the seed into a fit part (`fit_fraction`) and a held-out
    part, fits v on the fit part (by the model's predictions, never the labels), records
    `universal_records` and the fit's own records in `result.extra`, and returns clip(x + v) for every
    image. So `result.robust_accuracy` is the accuracy under v over all N images, and the papers'
    numbers are the held-out ones in `extra` (docs/attacks.md, "Universal perturbations").
    `fit(victim, x)` returns v itself, fitted on all of `x`.
    """

    targeted_ok: ClassVar[bool] = False
    universal: ClassVar[bool] = True  # one v for every image: every image is attacked, no per-image checks

    fit_fraction: float = param(0.5, gt=0, le=1, help="share of the images that fit v; the rest are held out")

    @abstractmethod
    def _fit(
        self, victim: Victim, x: Tensor, gen: torch.Generator, ctx: RunContext | None
    ) -> tuple[Tensor, dict[str, Any]]:
        """v (1, C, H, W) fitted on `x`, and the fit's own records (passes, the epoch kept ...), plain JSON."""

    def fit(self, victim: Victim, x: Tensor) -> Tensor:
        """The universal perturbation (1, C, H, W) fitted on all of `x`, seeded by `seed`."""
        x = x.to(victim.device)
        v, _ = self._fit(victim, x, make_generator(self.seed, victim.device), None)
        return v

    def _perturb(self, victim: Victim, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        fit, held = fit_split(x.shape[0], self.fit_fraction, ctx.gen)
        fit, held = fit.to(x.device), held.to(x.device)
        v, records = self._fit(victim, x[fit], ctx.gen, ctx)
        ctx.extra.update(universal_records(victim, x, y, v, fit, held))
        ctx.extra.update(records)
        return apply(x, v, victim.bounds)


def fit_split(n: int, fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded split of range(n) into (fit indices, held-out indices); at least one image fits v."""
    perm = torch.randperm(n, generator=gen, device=gen.device)
    n_fit = min(n, max(1, round(fraction * n)))
    return perm[:n_fit], perm[n_fit:]


def apply(x: Tensor, v: Tensor, bounds: tuple[float, float]) -> Tensor:
    """clip(x + v) for every image of `x` (N, C, H, W) and the one perturbation `v` (1, C, H, W)."""
    return (x + v).clamp(*bounds)


def project_v(v: Tensor, norm: str, xi: float) -> Tensor:
    """`v` projected onto the L-inf (clip to +-xi) or L2 (rescale to norm <= xi) ball of radius xi."""
    if norm == "linf":
        return v.clamp(-xi, xi)
    return v * torch.clamp(xi / (v.norm(p=2) + 1e-12), max=1.0)


def fooling_rate(victim: Victim, x: Tensor, v: Tensor, clean_pred: Tensor) -> float:
    """Share of the images `x` whose predicted label v changes, `clean_pred` being their predictions
    without it, over every image, correctly classified or not: the fooling rate UAP defines,
    P(k(x + v) != k(x)) with k the model's prediction (arXiv 1610.08401), which FG-UAP's reference
    measures on all validation images. 0 on no images."""
    if x.shape[0] == 0:
        return 0.0
    return float((victim.predict(apply(x, v, victim.bounds)) != clean_pred).double().mean())


def universal_records(victim: Victim, x: Tensor, y: Tensor, v: Tensor, fit: Tensor, held: Tensor) -> dict[str, Any]:
    """The result's records of a universal perturbation `v` fitted on the images `fit` of (x, y).

    Every rate counts all the images of its part, correctly classified or not, as the papers do:
    `fooling_rate_heldout`, the papers' fooling rate, is the share of held-out images whose predicted
    label v changes; `accuracy_under_v_heldout` the model's top-1 accuracy on them with v added, beside
    `clean_accuracy_heldout` without it; `fooling_rate_fit` the fooling rate on the images that fit v;
    `dominant_share` the share of held-out perturbed predictions in the most frequent class (FG-UAP's
    dominance); `heldout_index` where the held-out images sit in `x`, so that each number can be
    re-measured from the result. The held-out numbers are None without held-out images.
    """
    clean = victim.predict(x)  # (N,)
    pred = victim.predict(apply(x, v, victim.bounds))  # (N,)
    changed = pred != clean

    def held_mean(t: Tensor) -> float | None:
        return float(t[held].double().mean()) if held.numel() else None

    return {
        "n_fit": int(fit.numel()),
        "n_heldout": int(held.numel()),
        "heldout_index": sorted(held.tolist()),
        "fooling_rate_heldout": held_mean(changed),
        "accuracy_under_v_heldout": held_mean(pred == y),
        "clean_accuracy_heldout": held_mean(clean == y),
        "fooling_rate_fit": float(changed[fit].double().mean()),
        "dominant_share": float(torch.bincount(pred[held]).max()) / held.numel() if held.numel() else None,
        "v_linf": float(lp_norms(v, "linf")[0]),
        "v_l2": float(lp_norms(v, "l2")[0]),
    }
