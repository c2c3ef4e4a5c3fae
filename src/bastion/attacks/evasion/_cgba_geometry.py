"""What `cgba` and `cgba-h` share: the initial boundary point, the normal-vector estimate in a low-frequency
DCT subspace, the rotation in the plane of (x_b - x, normal), batched bisections, and the iteration loop.

The two attacks differ only in how they search that plane for a closer boundary point (`_search`).
Everything is batched: each sample keeps its own boundary point, radius, angle and query count, and
each step sends the probes of every sample still searching in one oracle query, row i tagged with its
sample.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.attacks.evasion._decision import Decision
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.ops import dct_matrix
from bastion.core.oracle import Oracle
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.threat import Access, Norm

__all__ = ["CGBAFamily", "Run", "low_frequency", "rotate", "subspace_factor"]

# The reference's constants (Farhamdur/CGBA proposed_attack.py), not hyperparameters of the paper.
MAX_BISECTION = 100  # straight-segment bisection steps
MAX_ARC_BISECTION = 101  # semicircle bisection steps (the reference stops once its counter exceeds 100)
# Elements of one estimation query: above this the rows go to the oracle in several queries (memory only).
_MAX_QUERY_ELEMENTS = 2**25
_PHASES = ("init", "estimate", "search", "final")  # where queries go, counted apart (`extra["queries_<phase>"]`)
# The default subspace (`subspace_factor`). The reference's f = 4 (Farhamdur/CGBA `Non_targeted_attack.py`,
# `dim_reduc_factor = 4`) keeps 56 x 56 of 224 x 224 ImageNet frequencies; on 28 x 28 mnist5k images its 7 x 7
# block lags HSJA, and a sweep of the block side (7 to 28, benchmarks/cgba.py) found 14 best at 1,000 queries.
MAX_FACTOR = 4
MIN_SIDE = 14


def subspace_factor(h: int, w: int) -> int:
    """The default f for H x W inputs: the largest integer f <= 4 that keeps at least 14 frequencies along the
    shorter side (min(H, W) / f >= 14), and 1, the full space, below 28 pixels.

    28 x 28 and 32 x 32 inputs get f = 2 (14 x 14 and 16 x 16 blocks), 224 x 224 the reference's f = 4.
    """
    return max(1, min(MAX_FACTOR, min(h, w) // MIN_SIDE))


def low_frequency(z: Tensor, h: int, w: int) -> Tensor:
    """Map coefficients z (R, C, h', w') of the top-left h' x w' DCT block to pixels (R, C, h, w) by the
    orthonormal 2-D inverse DCT (every other coefficient zero)."""
    dh = dct_matrix(h, z.device)[: z.shape[2]]  # (h', h)
    dw = dct_matrix(w, z.device)[: z.shape[3]]  # (w', w)
    return torch.einsum("rcab,ai,bj->rcij", z, dh, dw)


def rotate(eta: Tensor, v: Tensor, theta: Tensor, phi: Tensor) -> Tensor:
    """The unit vectors (M, D) at angle phi from v, turned toward eta, in the plane of (v, eta).

    eta and v are unit vectors (M, D) at angle theta (M,); `eta + mu v` with
    mu = sin(theta) cos(phi) / sin(phi) - cos(theta) points at angle phi from v (the paper's zeta).
    A degenerate plane (eta parallel to v) gives v.
    """
    mu = torch.sin(theta) * torch.cos(phi) / torch.sin(phi) - torch.cos(theta)
    z = eta + mu[:, None] * v
    n = z.norm(dim=1, keepdim=True)
    ok = (n > 1e-12) & torch.isfinite(n)
    return torch.where(ok, z / n.clamp(min=1e-12), v)


@dataclass
class Run:
    """Per-run state of the M samples handed in; rows of every tensor are samples.

    Attributes:
        dec: the label oracle, the budgets and the closest adversarial input found so far (L2), per sample.
        xb: the current boundary point of each sample (the adversarial end of its last search).
        alive: samples with an adversarial start (the others keep x and send no more queries).
        spent: queries per phase, (M,) each: `init`, `estimate`, `search`, `final`.
    """

    dec: Decision
    ctx: RunContext
    xb: Tensor
    alive: Tensor
    spent: dict[str, Tensor]

    @property
    def x(self) -> Tensor:
        """The clean inputs (M, C, H, W)."""
        return self.dec.x


@dataclass(frozen=True, kw_only=True)
class CGBAFamily(EvasionAttack):
    """The loop of CGBA and CGBA-H (Reza, Rahmati, Wu, Bouzerdoum, ICCV 2023, arXiv 2308.03163).

    Not registered: `cgba` and `cgba-h` subclass it and implement `_search`. See `bastion.attacks.evasion.cgba`
    for the algorithm, the defaults and their provenance.
    """

    access: ClassVar[Access] = "label"
    norms: ClassVar[tuple[Norm, ...]] = ("l2",)
    targeted_ok: ClassVar[bool] = True

    n_iter: int = param(93, ge=1, help="iterations: a normal-vector estimate and one boundary search each")
    n_queries: int = param(20_000, ge=1, help="queries per sample, the start included (max_queries caps it too)")
    n0: int = param(30, ge=1, help="estimation queries at iteration t (from 0): floor(n0 * sqrt(t + 1))")
    dim_reduction: float | None = param(
        None, ge=1, help="f: directions live in the top-left (H/f) x (W/f) DCT frequencies; None: by image size"
    )
    sigma: float = param(4.5e-5, gt=0, help="scale of the estimation probes x_b + sigma * u, in input units")
    tol: float = param(2.3e-5, gt=0, help="a bisection stops once its two ends are closer than this (L2)")
    init_step: float = param(4.5e-3, gt=0, help="untargeted start: try k adds k * init_step * N(0, I) noise")
    init_tries: int = param(1000, ge=1, help="noise draws per sample before its start is given up")

    # ---------------------------------------------------------------- the loop

    def _perturb(self, oracle: Oracle, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        m = x.shape[0]
        # one query is always kept back for the final check (`_settle`)
        dec = Decision(oracle, x, y, ctx.target_labels, norm="l2", trace=ctx.trace, cap=self.n_queries, reserve=1)
        run = Run(
            dec=dec,
            ctx=ctx,
            xb=x.clone(),
            alive=torch.zeros(m, dtype=torch.bool, device=x.device),
            spent={k: torch.zeros(m, dtype=torch.long, device=x.device) for k in _PHASES},
        )
        self._start(run)
        iterations = 0
        for it in range(self.n_iter):
            ids = self._active(run)
            if ids.numel() == 0:
                break
            ids, eta = self._normal(run, ids, int(self.n0 * math.sqrt(it + 1)))
            if ids.numel():
                self._search(run, ids, eta)
            iterations = it + 1
            report(ctx.progress, self.name, it + 1, self.n_iter)
        self._settle(run)
        spent_total = sum(run.spent.values())
        assert isinstance(spent_total, Tensor) and torch.equal(spent_total, oracle.queries)  # every query accounted
        ctx.extra.update({f"queries_{k}": int(v.sum()) for k, v in run.spent.items()})
        ctx.extra["iterations"] = iterations
        ctx.extra["dim_reduction"] = float(self.factor(*x.shape[2:]))
        return dec.best_x

    @abstractmethod
    def _search(self, run: Run, ids: Tensor, eta: Tensor) -> None:
        """Search the plane of (x_b - x, eta) of samples `ids` (K,) for a closer boundary point; set `run.xb`.

        eta (K, D) is the estimated normal at x_b, pointing into the adversarial side (not normalised).
        """

    def factor(self, h: int, w: int) -> float:
        """The dimension-reduction factor f used on H x W inputs: `dim_reduction`, else `subspace_factor`'s."""
        return subspace_factor(h, w) if self.dim_reduction is None else self.dim_reduction

    # ---------------------------------------------------------------- queries and budgets

    def _active(self, run: Run) -> Tensor:
        """Samples still attacked: a start was found and the budget is not spent."""
        ids = run.alive.nonzero().squeeze(1)
        return ids[run.dec.room(ids) > 0]

    def ask(self, run: Run, rows: Tensor, pts: Tensor, phase: str, record: bool = True) -> Tensor:
        """Query points pts (R, C, H, W), row i for sample rows[i]; whether each is adversarial (R,).

        The caller has checked the budget (`run.dec.room`); the queries count towards `phase`. With `record`,
        adversarial points closer than a sample's best become its best and are reported to the trace (rows
        must then name distinct samples).
        """
        adv = run.dec.adversarial(pts, rows)
        run.spent[phase] += torch.bincount(rows, minlength=run.spent[phase].shape[0])
        if record:
            run.dec.offer(rows[adv], pts[adv])
        return adv

    def _settle(self, run: Run) -> None:
        """Move each best point out by 2 * tol along its ray from x, kept when one query says it is adversarial.

        A bisection's adversarial end may lie within float32 noise of the boundary, where the label can
        change with the batch the model evaluates it in (run()'s final check included); 2 * tol more L2 puts
        it safely inside the adversarial side. The query was the one `run.dec.room` keeps back.
        """
        best, best_d = run.dec.best_x, run.dec.best_d
        ids = torch.isfinite(best_d).nonzero().squeeze(1)
        ids = ids[run.dec.room(ids, reserve=0) > 0]
        if ids.numel() == 0:
            return
        x, d = run.x[ids], best_d[ids].clamp(min=1e-12)
        lo, hi = self.threat.bounds
        pts = (x + (best[ids] - x) * (1 + 2 * self.tol / d).view(-1, *([1] * (x.dim() - 1)))).clamp(lo, hi)
        ok = self.ask(run, ids, pts, "final", record=False)
        best[ids[ok]] = pts[ok]

    # ---------------------------------------------------------------- initialisation

    def _start(self, run: Run) -> None:
        """A first boundary point per sample: an adversarial start, then bisection on [x, start]."""
        x, m = run.x, run.x.shape[0]
        start = x.clone()
        found = torch.zeros(m, dtype=torch.bool, device=x.device)
        y, t = run.dec.y, run.dec.target
        if t is not None:
            # Targeted (the reference starts from an image of the target class): the nearest image of the batch
            # whose label is the target, checked with one query.
            same = y[None, :] == t[:, None]  # (M, M): image j has sample i's target label
            dist = torch.cdist(x.flatten(1), x.flatten(1)).masked_fill(~same, math.inf)
            near_d, near = dist.min(dim=1)
            ids = (torch.isfinite(near_d) & (run.dec.room(torch.arange(m, device=x.device)) > 0)).nonzero()
            ids = ids.squeeze(1)
            if ids.numel():
                adv = self.ask(run, ids, x[near[ids]], "init")
                start[ids[adv]] = x[near[ids[adv]]]
                found[ids[adv]] = True
        self._noise_start(run, start, found)
        ids = found.nonzero().squeeze(1)
        if ids.numel() < m:
            run.ctx.warnings.append(
                f"{self.name}: {m - ids.numel()} of {m} samples found no adversarial starting point "
                f"(init_tries={self.init_tries} or the budget ran out); they keep their clean input"
            )
        run.alive[ids] = True
        run.xb[ids] = start[ids]
        self.bisect(run, ids, x[ids], start[ids], "init")

    def _noise_start(self, run: Run, start: Tensor, found: Tensor) -> None:
        """Try k = 1, 2, ...: x + k * init_step * N(0, I), clipped, until adversarial (one query per try).

        The noise of every sample is drawn at each try (used or not), so a sample's draws do not depend on
        when the others stop.
        """
        x, gen = run.x, run.ctx.gen
        lo, hi = self.threat.bounds
        for k in range(1, self.init_tries + 1):
            ids = (~found).nonzero().squeeze(1)
            ids = ids[run.dec.room(ids) > 0]
            if ids.numel() == 0:
                return
            noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
            pts = (x[ids] + k * self.init_step * noise[ids]).clamp(lo, hi)
            adv = self.ask(run, ids, pts, "init")
            start[ids[adv]] = pts[adv]
            found[ids[adv]] = True

    # ---------------------------------------------------------------- normal vector

    def _normal(self, run: Run, ids: Tensor, q: int) -> tuple[Tensor, Tensor]:
        """Estimate the normal at x_b of samples `ids` with min(q, budget left) probes each.

        eta = mean_i s_i u_i, s_i = +1 when x_b + sigma u_i is adversarial, else -1; u_i Gaussian in the
        low-frequency DCT block (no normalisation, as the reference). Returns (ids, eta (K, D)).
        """
        x, gen = run.x, run.ctx.gen
        m, (c, h, w) = x.shape[0], x.shape[1:]
        f = self.factor(h, w)
        bh, bw = (max(int(h / f), 1), max(int(w / f), 1)) if f > 1 else (h, w)
        # drawn for every sample (used or not): a sample's directions do not depend on the others' budgets
        z = torch.randn((m, q, c, bh, bw), generator=gen, device=gen.device).to(x.device)
        nq = run.dec.room(ids).clamp(max=q)  # (K,)
        use = torch.arange(q, device=x.device)[None, :] < nq[:, None]  # (K, q)
        rows = ids[:, None].expand(-1, q)[use]  # (R,)
        coeff = z[ids][use]  # (R, C, bh, bw)
        u = low_frequency(coeff, h, w) if f > 1 else coeff
        lo, hi = self.threat.bounds
        signs = torch.empty(rows.numel(), device=x.device)
        step = max(_MAX_QUERY_ELEMENTS // max(u[0].numel(), 1), 1)
        for s in range(0, rows.numel(), step):
            part = slice(s, s + step)
            pts = (run.xb[rows[part]] + self.sigma * u[part]).clamp(lo, hi)
            signs[part] = self.ask(run, rows[part], pts, "estimate", record=False).float() * 2 - 1
        eta = torch.zeros(m, c * h * w, device=x.device)
        eta.index_add_(0, rows, signs[:, None] * u.flatten(1))
        eta = eta[ids] / nq.clamp(min=1)[:, None].float()
        return ids, eta

    # ---------------------------------------------------------------- bisections

    def geometry(self, run: Run, ids: Tensor, eta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(v, eta_hat, theta, R) of samples ids: the unit direction of x_b - x, the unit normal, the angle
        between them and the distance ||x_b - x||."""
        diff = (run.xb[ids] - run.x[ids]).flatten(1)
        r = diff.norm(dim=1)
        v = diff / r.clamp(min=1e-12)[:, None]
        eta_hat = eta / eta.norm(dim=1, keepdim=True).clamp(min=1e-12)
        theta = torch.acos((eta_hat * v).sum(1).clamp(-1.0, 1.0))
        return v, eta_hat, theta, r

    def bisect(self, run: Run, ids: Tensor, clean: Tensor, adv: Tensor, phase: str) -> None:
        """Bisect the segments [clean, adv] of samples ids (adv adversarial) until the ends are closer than
        `tol`, after `MAX_BISECTION` steps, or when the budget ends; x_b becomes the adversarial end.

        As the reference, every segment takes a first step however short it is, and the midpoints are the
        points themselves (the straight segment in input space)."""
        run.xb[ids] = run.dec.bisect(
            ids,
            clean,
            adv,
            lambda r, mid: self.ask(run, ids[r], mid, phase),
            lambda r, c, a: (a - c).flatten(1).norm(dim=1) >= self.tol,
            start=torch.ones(ids.numel(), dtype=torch.bool, device=ids.device),
            max_steps=MAX_BISECTION,
        )
