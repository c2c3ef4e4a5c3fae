"""Query-efficiency records of a black-box attack: when each sample was first fooled inside the ball,
and how far its best adversarial input lay after each query budget, so that a report can draw success
rate vs queries and median distance vs queries."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bastion.core.ops import BALL_TOLERANCE

__all__ = ["BUDGETS", "QueryTrace"]

# The budgets at which curves are read: roughly 1-2.5-5 steps per decade.
BUDGETS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)


class QueryTrace:
    """Per-sample records of the `n` samples an attack was handed.

    An attack calls `adversarial(idx, queries, dist)` whenever samples `idx` hold an adversarial
    input found with `queries` queries spent on them; `dist` is that input's distance to the clean
    one in the threat model's norm, `None` when it lies inside the ball by construction (score-based
    attacks). A sample first succeeds at the first such call with `dist <= eps`. For each budget b,
    the record keeps the smallest distance found with at most b queries (`inf`: none yet).
    """

    def __init__(self, n: int, eps: float, device: torch.device) -> None:
        self.eps = eps * (1 + BALL_TOLERANCE) + BALL_TOLERANCE
        self.first = torch.full((n,), -1, dtype=torch.long, device=device)
        self.budgets = torch.tensor(BUDGETS, dtype=torch.long, device=device)
        self.dist = torch.full((n, len(BUDGETS)), math.inf, device=device)
        self.has_dist = False

    def adversarial(self, idx: Tensor, queries: Tensor, dist: Tensor | None = None) -> None:
        """Samples `idx` (M,) hold adversarial inputs found after `queries` (M,) queries, at `dist` (M,)."""
        if idx.numel() == 0:
            return
        queries = queries.to(self.first.device)
        inside = torch.ones_like(idx, dtype=torch.bool) if dist is None else dist <= self.eps
        new = inside & (self.first[idx] < 0)
        self.first[idx[new]] = queries[new]
        if dist is not None:
            self.has_dist = True
            reached = queries[:, None] <= self.budgets[None, :]  # (M, B): budgets this find counts for
            cand = torch.where(reached, dist.float()[:, None], torch.full_like(self.dist[idx], math.inf))
            self.dist[idx] = torch.minimum(self.dist[idx], cand)

    def to_extra(self, attacked: Tensor, n_total: int, max_spent: int) -> dict[str, Any]:
        """The records laid over all `n_total` samples of the run (`attacked`: the indices handed in).

        Samples not attacked get -1 / null. Budgets stop at the first one covering `max_spent`.
        """
        keep = int((self.budgets < max_spent).sum()) + 1 if max_spent > 0 else 0
        keep = min(keep, len(BUDGETS))
        budgets = BUDGETS[:keep]
        first = torch.full((n_total,), -1, dtype=torch.long)
        first[attacked.cpu()] = self.first.cpu()
        out: dict[str, Any] = {"first_success_query": first.tolist()}
        succ = self.first.cpu()
        n = max(int(attacked.numel()), 1)
        curve: dict[str, Any] = {
            "budgets": list(budgets),
            "success_rate": [float(((succ >= 0) & (succ <= b)).sum()) / n for b in budgets],
        }
        if self.has_dist:
            dist = self.dist[:, :keep].cpu()
            med = dist.double().quantile(0.5, dim=0) if dist.shape[0] else torch.full((keep,), math.nan)
            curve["median_dist"] = [v if math.isfinite(v) else None for v in med.tolist()]
            full = torch.full((n_total, keep), math.inf)
            full[attacked.cpu()] = dist
            out["dist_at_budget"] = [[round(v, 6) if math.isfinite(v) else None for v in row] for row in full.tolist()]
        out["query_curve"] = curve
        return out
