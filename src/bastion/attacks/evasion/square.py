"""`square`: the Square Attack, a score-based random search over square-shaped updates (L-inf and L2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._active import Retire, State
from bastion.attacks.evasion._losses import max_other
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.errors import DataError
from bastion.core.oracle import Oracle, OutputMode
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.threat import Access, Norm

__all__ = ["Square", "eta", "p_schedule"]

# The paper's piecewise-constant schedule: up to rescaled iteration `end`, p = p_init / `div`; p_init / 512 beyond.
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))
_PROGRESS_EVERY = 50
_FLIP_BITS = 30  # channels covered exactly by the L-inf sign redraw (see `_linf_step`)
_P_INIT_LINF = 0.8  # AutoAttack's (and the paper's for Madry's MNIST model)
_P_INIT_L2 = 0.1  # the paper's for L2 (max-andr/square-attack attack.py: "L2 standard: 0.1")


def p_schedule(i: int, n_iters: int, p_init: float, rescale: bool = True) -> float:
    """The fraction p of the image a square covers at iteration `i` (0-based) of an `n_iters` run.

    With `rescale`, `i` is first mapped onto a 10,000-iteration run, `i' = floor(i * 10000 / n_iters)`;
    without it (AutoAttack's setting) the breakpoints sit at raw iterations 10, 50, 200, ..., 8000.
    """
    it = i * 10000 // n_iters if rescale else i
    for end, div in _SCHEDULE:
        if it <= end:
            return p_init / div
    return p_init / 512


def _rings(a: int, b: int) -> Tensor:
    """An a x b rectangle where nested squares of side 2k+1 centred on cell (a//2, b//2) each add 1/(k+1)^2."""
    if a == 0:
        return torch.zeros(0, b, dtype=torch.float64)
    k = max(a // 2, b // 2) + 1  # the squares needed to cover the rectangle
    tail = (1.0 / torch.arange(1, k + 1, dtype=torch.float64) ** 2).flip(0).cumsum(0).flip(0)  # sum_{j>=d}
    dist = torch.maximum((torch.arange(a) - a // 2).abs()[:, None], (torch.arange(b) - b // 2).abs()[None, :])
    out = tail[dist]  # a cell at ring distance d is covered by the squares k >= d
    return out / out.norm()


def eta(s: int) -> Tensor:
    """The L2 update shape eta(s) (s, s) of unit L2 norm: a positive bump on the top s//2 rows, a negative
    one on the other rows. The random transposition (probability 1/2) is drawn by the caller."""
    top, bottom = _rings(s // 2, s), _rings(s - s // 2, s)
    out = torch.cat([top, -bottom])
    return (out / out.norm()).float()


@lru_cache(maxsize=32)
def _eta_on(s: int, device: torch.device) -> Tensor:
    """eta(s) on `device`, built once per side (callers never write to it)."""
    return eta(s).to(device)


@register_attack("square")
@dataclass(frozen=True, kw_only=True)
class Square(EvasionAttack):
    """Square Attack. Andriushchenko, Croce, Flammarion, Hein, ECCV 2020, arXiv 1912.00049.

    Random search with a score oracle: each iteration changes one square window of the current best
    perturbation and keeps the candidate only when the loss strictly falls (or the sample is fooled).
    The loss is the logit margin `z_y - max_{j != y} z_j` (untargeted; `loss="ce"` minimises -CE as
    AutoAttack allows) and the cross-entropy to the target for a targeted threat model. L-inf starts
    from vertical stripes of +-eps and sets a window to one +-eps per channel, redrawing the signs
    when the window would not change; L2 starts from a tiling of eta(s) bumps and moves mass between
    two windows with a per-channel budget. The window side follows `p_schedule`.

    Queries: the initialisation is query 1 of each sample, then one per iteration while the sample is
    not fooled; it leaves the active set on the answer that shows it fooled. A restart's budget is
    `n_queries` or what the threat model's `max_queries` leaves, whichever is smaller, and a sample
    never fooled spends all of it (max-andr/square-attack spends one query more for L2, AutoAttack one
    more for both norms). The schedule of p is laid over that budget. The result's
    `extra["first_success_query"]` gives, per sample, the query count at which it was first fooled
    (-1 if never) and `extra["query_curve"]` the success rate vs queries.

    Windows are drawn per image, as in the paper and max-andr/square-attack; AutoAttack's batched
    PyTorch version shares one window (and one sign per channel) across the batch. The transpositions
    of the L2 shape, in the steps and in the initial tiles, are drawn per image too.

    Defaults: `n_queries = 5000`, one restart and, for L-inf, `p_init = 0.8` are what AutoAttack's
    standard version gives its Square (fra31/auto-attack `autoattack.py`: `p_init=.8, n_queries=5000,
    n_restarts=1, resc_schedule=False`, for L-inf and L2 alike; bastion's `autoattack` passes the same,
    0.8 for L2 included). For L2 the default is the paper's `p_init = 0.1` (arXiv 1912.00049; the `--p`
    help of max-andr/square-attack `attack.py`: "Linf standard: 0.05, L2 standard: 0.1").
    `rescale_schedule` defaults to true, as in max-andr/square-attack and AutoAttack's `SquareAttack`
    class; only AutoAttack's standard version turns it off. The paper uses L-inf `p_init` 0.05 on
    undefended ImageNet models (10,000 queries), 0.3 for the defended CIFAR-10/MNIST models and 0.8 for
    Madry's MNIST model (20,000 iterations). See docs/attacks.md.

    Numbers: the reference's (max-andr/square-attack) saved ImageNet metrics at L-inf eps = 0.05,
    p = 0.05, 10,000 queries are 0.0% failure and 73 mean queries over successes on ResNet-50; Square
    scores 92.58% on the TRADES MNIST model at eps = 0.3. Measured on CPU: an undefended
    `small_cnn` (2 epochs on `mnist5k`, 91.5% clean) at L-inf 0.3 with the defaults and 1,000 queries
    is fooled on 100% of 183 correctly classified test images, after 21 queries on average (median 9).
    On the 8x8 digits its robust accuracy is within 1 point of the `fra31/auto-attack` snapshot's
    Square at 1,000 queries (L-inf and L2, both schedules).

    Speed (`benchmarks/evasion_peers.py --attacks square --peers reference`: 500 `mnist5k` test images,
    L-inf 0.3, 1,000 queries, one CPU thread): a run is its model's forward passes, as the reference's
    is (about 94% of either's time on the standard `small_cnn`, 98% on the `pgd-at` one); an iteration
    adds a few whole-batch tensor operations, no copy of the query and two host syncs. Time follows
    the number of queries, and the reference's windows, shared by the batch, make that number swing
    with the seed: 16.2 to 24.4 queries per attacked image over seeds 0-19 on the standard model (mean
    19.9; seed 0 is its lowest), against 17.5 to 19.4 (mean 18.3) with per-image windows, on the same
    images (forward rows counted). Compare the two over several seeds, not one: over seeds 0-4
    (`--seeds 5`) bastion took 30.2 s against the reference's 32.5 s on the standard model (19.7 against
    21.1 forward rows per image) and spent the same rows on the `pgd-at` one (840 against 843 per image,
    robust accuracy 81.2% against 81.7%), where both spend 97-98% of their time in the model's forward
    pass (200 images, 300 queries: 0.8 s of 34 s outside it, for either); the seconds of single runs
    there swung by 30% with the machine's load, in both directions.
    """

    access: ClassVar[Access] = "scores"
    oracle_output: ClassVar[OutputMode] = "logits"
    norms: ClassVar[tuple[Norm, ...]] = ("linf", "l2")
    targeted_ok: ClassVar[bool] = True

    n_queries: int = param(5000, ge=1, help="queries per sample and restart, the initialisation query included")
    p_init: float | None = param(
        None, gt=0, le=1, help="initial fraction of the image a square covers; default 0.8 (L-inf), 0.1 (L2)"
    )
    n_restarts: int = param(1, ge=1, help="runs from a fresh initialisation for the samples not yet fooled")
    rescale_schedule: bool = param(True, help="map the schedule of p onto a 10,000-query run (AutoAttack: false)")
    loss: Literal["margin", "ce"] = param("margin", help="untargeted loss: margin or ce (targeted: CE to target)")

    def _perturb(self, oracle: Oracle, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        if min(x.shape[2:]) < 2:
            raise DataError(f"square needs images of at least 2x2 pixels; got {tuple(x.shape[2:])}")
        # the restarts' results: a fooled sample's input, else the lowest-loss one of any restart
        retire = Retire(x.clone(), self._current, oracle, ctx.trace)
        best_loss = torch.full((x.shape[0],), math.inf, device=x.device)
        for _ in range(self.n_restarts):
            ids = (~retire.succeeded).nonzero().squeeze(1)
            budget = min(self.n_queries, int(oracle.remaining(ids).min())) if ids.numel() else 0
            if budget < 1:
                break
            self._restart(oracle, x, y, ctx, ids, budget, retire, best_loss)
        return retire.x_adv

    def _scores(self, logits: Tensor, y: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        """(loss to minimise, fooled) per sample (M,)."""
        if t is None:
            margin = logits.gather(1, y[:, None]).squeeze(1) - max_other(logits, y)
            loss = margin if self.loss == "margin" else -F.cross_entropy(logits, y, reduction="none")
            return loss, margin <= 0
        fooled = max_other(logits, t) - logits.gather(1, t[:, None]).squeeze(1) <= 0
        return F.cross_entropy(logits, t, reduction="none"), fooled

    def _restart(
        self,
        oracle: Oracle,
        x: Tensor,
        y: Tensor,
        ctx: RunContext,
        ids: Tensor,
        budget: int,
        retire: Retire,
        best_loss: Tensor,
    ) -> None:
        """One run of at most `budget` queries per sample on the samples `ids`; results go into `retire.x_adv`,
        the loss of a sample never fooled into `best_loss`."""
        eps, (lo, hi), gen = self.threat.eps, oracle.bounds, ctx.gen
        linf = self.threat.norm == "linf"
        p_init = self.p_init if self.p_init is not None else (_P_INIT_LINF if linf else _P_INIT_L2)
        m, c, h, w = ids.numel(), *x.shape[1:]
        # the active set, compacted as samples are fooled: every entry has m rows
        st: State = {"ids": ids, "y": y[ids]}
        if ctx.target_labels is not None:
            st["t"] = ctx.target_labels[ids]
        if linf:  # state: which pixels sit at x + eps (True) rather than x - eps, clipped to the bounds
            xs = x[ids]  # needed only through its two corners, so not carried in the active set
            st["xp"], st["xm"] = (xs + eps).clamp(lo, hi), (xs - eps).clamp(lo, hi)
            stripes = torch.randint(0, 2, (m, c, 1, w), generator=gen, device=gen.device).bool()
            st["state"] = stripes.expand(m, c, h, w).clone()
        else:  # state: the best input itself
            st["x"] = x[ids]
            st["state"] = (st["x"] + eps * _unit(self._l2_init(m, c, h, w, gen))).clamp(lo, hi)
        st["loss"], fooled = self._scores(oracle.query(self._current(st), st["ids"]), st["y"], st.get("t"))
        st = retire.fooled(st, fooled)
        n_iter = budget - 1
        grid = (torch.arange(h, device=x.device), torch.arange(w, device=x.device))
        for i in range(n_iter):
            if st["ids"].numel() == 0:
                break
            p = p_schedule(i, budget, p_init, self.rescale_schedule)
            cand, x_new = self._linf_step(st, p, gen, grid) if linf else self._l2_step(st, p, gen, grid)
            loss, fooled = self._scores(oracle.query(x_new, st["ids"]), st["y"], st.get("t"))
            better = (loss < st["loss"]) | fooled  # strict improvement; a fooling candidate is always kept
            st["loss"] = torch.where(better, loss, st["loss"])
            st["state"] = torch.where(better[:, None, None, None], cand, st["state"])
            st = retire.fooled(st, fooled)  # the one host sync of an iteration
            if (i + 1) % _PROGRESS_EVERY == 0 or i + 1 == n_iter:
                report(ctx.progress, "square", i + 1, n_iter)
        keep = st["loss"] < best_loss[st["ids"]]  # samples never fooled keep their lowest-loss input over restarts
        retire.x_adv[st["ids"][keep]] = self._current(st)[keep]
        best_loss[st["ids"][keep]] = st["loss"][keep]

    @staticmethod
    def _current(st: State) -> Tensor:
        """The best input so far of each active sample (M, C, H, W)."""
        return torch.where(st["state"], st["xp"], st["xm"]) if "xp" in st else st["state"]

    def _l2_init(self, m: int, c: int, h: int, w: int, gen: torch.Generator) -> Tensor:
        """Tiles of side s0 = min(H, W) // 5 from offset (H - 5 s0) // 2, each eta(s0) (transposed or not,
        per image) times a sign per channel; tiles are cut at the image border."""
        s = max(min(h, w) // 5, 1)
        nh, nw = h // s, w // s
        shapes = torch.stack([_eta_on(s, gen.device), _eta_on(s, gen.device).T])  # (2, s, s)
        tr = torch.randint(0, 2, (m, nh, nw), generator=gen, device=gen.device)
        tiles = shapes[tr].permute(0, 1, 3, 2, 4).reshape(m, 1, nh * s, nw * s)
        signs = torch.randint(0, 2, (m, c, nh, nw), generator=gen, device=gen.device) * 2.0 - 1
        pattern = tiles * signs.repeat_interleave(s, 2).repeat_interleave(s, 3)  # (M, C, nh*s, nw*s)
        delta = torch.zeros(m, c, h, w, device=gen.device)
        oh, ow = max((h - 5 * s) // 2, 0), max((w - 5 * s) // 2, 0)
        ph, pw = min(nh * s, h - oh), min(nw * s, w - ow)
        delta[:, :, oh : oh + ph, ow : ow + pw] = pattern[:, :, :ph, :pw]
        return delta

    def _linf_step(
        self, st: State, p: float, gen: torch.Generator, grid: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Per image, set a random window to one sign per channel; (candidate state, candidate input)."""
        pos = st["state"]
        m, c, h, w = pos.shape
        s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1)
        win, _, _ = _window(gen, m, s, grid)
        sign = torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=gen.device).bool()
        same = ((pos == sign) & win).sum((1, 2, 3)) == c * s * s  # the candidate would equal the current window
        # The reference redraws until the window changes: a uniform draw among the sign vectors other than the
        # current one. Flipping them by a uniform non-zero pattern of bits draws exactly that (for up to 30
        # channels; further channels keep their sign, a deviation of 2^-30).
        k = torch.randint(1, 2 ** min(c, _FLIP_BITS), (m, 1, 1, 1), generator=gen, device=gen.device)
        flip = (k >> torch.arange(c, device=k.device).clamp(max=_FLIP_BITS).view(1, c, 1, 1)) & 1 == 1
        sign = sign ^ (flip & same.view(m, 1, 1, 1))
        cand = torch.where(win, sign, pos)
        return cand, torch.where(cand, st["xp"], st["xm"])

    def _l2_step(self, st: State, p: float, gen: torch.Generator, grid: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Per image, move the mass of two windows into the first one, reshaped by eta; (candidate, candidate)."""
        x, eps, (lo, hi) = st["x"], self.threat.eps, self.threat.bounds
        m, c, h, w = x.shape
        s_max = min(h, w) - 1 if min(h, w) % 2 == 0 else min(h, w) - 2  # odd and smaller than the image
        s = max(round(math.sqrt(p * h * w)), 3)
        s = max(min(s + 1 - s % 2, s_max), 1)
        wins, lh, lw = _window(gen, 2 * m, s, grid)  # rows m.. are the second windows
        win1, win2, lh, lw = wins[:m], wins[m:], lh[:m], lw[:m]
        tr = torch.randint(0, 2, (m, 1, 1), generator=gen, device=gen.device).bool()
        sign = torch.randint(0, 2, (m, c, 1, 1), generator=gen, device=gen.device) * 2.0 - 1
        lh, lw = lh.clamp(0, s - 1)[:, :, None], lw.clamp(0, s - 1)[:, None, :]
        cell = torch.where(tr, lw * s + lh, lh * s + lw)  # (M, H, W) index into eta(s), transposed per image
        bump = _eta_on(s, x.device).flatten()[cell].unsqueeze(1) * win1  # (M, 1, H, W)
        delta = st["state"] - x
        both = win1 | win2
        old = delta * win1
        old_norm = old.square().sum((2, 3), keepdim=True).sqrt()  # (M, C, 1, 1)
        room = (eps**2 - delta.square().sum((1, 2, 3), keepdim=True)).clamp(min=0) / c
        budget = (room + (delta * both).square().sum((2, 3), keepdim=True)).sqrt()  # per channel
        new = bump * sign + old / (old_norm + 1e-12)
        new = new / (new.square().sum((2, 3), keepdim=True).sqrt() + 1e-12) * budget
        delta = torch.where(both, 0.0, delta) + new  # `new` is zero outside window 1
        x_new = (x + eps * _unit(delta)).clamp(lo, hi)
        return x_new, x_new


def _unit(delta: Tensor) -> Tensor:
    """delta / ||delta||_2 per sample."""
    return delta / (delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)


def _window(gen: torch.Generator, m: int, s: int, grid: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """One s x s window per image, corner uniform in {0..H-s-1} x {0..W-s-1} as in the reference: the mask
    (M, 1, H, W) and each row's and column's offset from the corner, (M, H) and (M, W)."""
    rows, cols = grid
    h, w = rows.numel(), cols.numel()
    if h == w:
        corner = torch.randint(0, h - s, (m, 2), generator=gen, device=gen.device)
        top, left = corner[:, :1], corner[:, 1:]
    else:
        top = torch.randint(0, h - s, (m, 1), generator=gen, device=gen.device)
        left = torch.randint(0, w - s, (m, 1), generator=gen, device=gen.device)
    lh, lw = rows - top, cols - left  # (M, H), (M, W)
    win = ((lh >= 0) & (lh < s))[:, None, :, None] & ((lw >= 0) & (lw < s))[:, None, None, :]
    return win, lh, lw
