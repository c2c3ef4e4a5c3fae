"""What the universal-perturbation attacks share: the fit/held-out split, applying one v to a batch,
the L-p projection of v, and the records of how well v fools held-out images."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bastion.core.ops import lp_norms
from bastion.core.victim import Victim

__all__ = ["apply", "fit_split", "fooling_rate", "project_v", "universal_records"]


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
