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

    `run(victim, x, y)` splits the images it attacks by the seed into a fit part (`fit_fraction`)
    and a held-out part, fits v on the fit part, records `universal_records` and the fit's count
    under `count_key` in `result.extra`, and returns clip(x + v) for every attacked image.
    `fit(victim, x)` returns v itself, fitted on all of `x`.
    """

    targeted_ok: ClassVar[bool] = False
    universal: ClassVar[bool] = True  # one v for every image: the per-image sanity checks do not apply
    count_key: ClassVar[str]  # what `_fit`'s count is called in `result.extra`

    fit_fraction: float = param(0.5, gt=0, le=1, help="share of the attacked images that fit v; the rest are held out")

    @abstractmethod
    def _fit(self, victim: Victim, x: Tensor, gen: torch.Generator, ctx: RunContext | None) -> tuple[Tensor, int]:
        """v (1, C, H, W) fitted on `x`, and a count of the fit's work (passes, the best epoch)."""

    def fit(self, victim: Victim, x: Tensor) -> Tensor:
        """The universal perturbation (1, C, H, W) fitted on all of `x`, seeded by `seed`."""
        x = x.to(victim.device)
        v, _ = self._fit(victim, x, make_generator(self.seed, victim.device), None)
        return v

    def _perturb(self, victim: Victim, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        fit, held = fit_split(x.shape[0], self.fit_fraction, ctx.gen)
        fit, held = fit.to(x.device), held.to(x.device)
        v, count = self._fit(victim, x[fit], ctx.gen, ctx)
        ctx.extra.update(universal_records(victim, x, v, fit, held, victim.predict(x)))
        ctx.extra[self.count_key] = count
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
    """Share of images whose predicted label changes under v (the UAP papers' metric), 0 on no images."""
    if x.shape[0] == 0:
        return 0.0
    return float((victim.predict(apply(x, v, victim.bounds)) != clean_pred).float().mean())


def universal_records(
    victim: Victim, x: Tensor, v: Tensor, fit: Tensor, held: Tensor, clean_pred: Tensor
) -> dict[str, Any]:
    """The result's records of a universal perturbation `v` fitted on images `fit` of `x`.

    `fooling_rate_heldout` (None without held-out images) is the papers' metric; `dominant_share` is
    the share of held-out perturbed predictions in the most frequent class (FG-UAP's dominance).
    """
    pred = victim.predict(apply(x, v, victim.bounds))
    changed = pred != clean_pred
    held_pred = pred[held]
    dominant = float(torch.bincount(held_pred).max()) / held.numel() if held.numel() else None
    return {
        "n_fit": int(fit.numel()),
        "n_heldout": int(held.numel()),
        "fooling_rate_fit": float(changed[fit].float().mean()),
        "fooling_rate_heldout": float(changed[held].float().mean()) if held.numel() else None,
        "dominant_share": dominant,
        "v_linf": float(lp_norms(v, "linf")[0]),
        "v_l2": float(lp_norms(v, "l2")[0]),
    }
