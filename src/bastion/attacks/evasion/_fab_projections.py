"""FAB's inner step: the exact, batched minimum-norm move onto a hyperplane inside a box.

For each row, given a point `p` in the box `[lo, hi]^D` and a hyperplane `{u : w.u = b}`, find the
displacement `d` of smallest L-inf or L2 norm with `w.(p + d) = b` and `lo <= p + d <= hi`. When the
hyperplane misses the box, return the move to the box corner that gets closest to it.

Why a sort and a bisection solve it exactly. Flip signs so that the move must raise `v.d` by
`r = |w.p - b| >= 0` (`v = +-w`). Each coordinate moves in the direction `sign(v_i)` and can go at
most `room_i` (the distance to the box face on that side). With a radius `lam`,

- L-inf: the best move is `d_i = sign(v_i) min(lam, room_i)`;
- L2 (the KKT point, `d = -lam w` clipped to the box): `d_i = sign(v_i) min(lam |v_i|, room_i)`.

In both cases the gain `F(lam) = v.d(lam)` is a sum of terms `min(slope_i lam, cap_i)` with
`slope_i = |v_i|` (L-inf) or `v_i^2` (L2) and `cap_i = |v_i| room_i`: continuous, non-decreasing,
piecewise linear, with a breakpoint where coordinate i saturates, `beta_i = cap_i / slope_i`. Sorted
by breakpoint, `F(beta_(k)) = C_k + beta_(k) S_k` with `C_k` the caps of the coordinates already
saturated (prefix sum) and `S_k` the slopes of the others (suffix sum). A binary search over these
sorted values (`torch.searchsorted`, one batched bisection for all rows) finds the segment holding
`F(lam) = r`, where `lam = (r - C_k) / S_k` is exact. `r > F(inf) = sum(cap)` means unreachable.

Cost: one sort of D values per row, O(N D log D). This is the algorithm of the reference's
`projection_linf` / `projection_l2` (fra31/auto-attack `autoattack/fab_projections.py`), which bisects
by hand over the same sorted breakpoints; written here once for both norms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.core.errors import ConfigError
from bastion.core.threat import Norm

__all__ = ["project_hyperplane_box"]


def project_hyperplane_box(p: Tensor, w: Tensor, b: Tensor, norm: Norm, bounds: tuple[float, float]) -> Tensor:
    """The minimum-norm displacement (N, D) moving each row of `p` onto `{u : w.u = b}` inside the box.

    Args:
        p: points (N, D) inside `bounds`.
        w: hyperplane normals (N, D); a zero row means no move.
        b: offsets (N,).
        norm: the norm to minimise, `linf` or `l2`.
        bounds: the box `(lo, hi)` applied to every coordinate.

    Returns:
        `d` with `w.(p + d) = b` and `p + d` in the box, of least norm; where no point of the box lies on
        the hyperplane, the move to the box corner that comes closest to it.
    """
    if norm not in ("linf", "l2"):
        raise ConfigError(f"the hyperplane projection is defined for the linf and l2 norms; got {norm!r}")
    lo, hi = bounds
    h = (w * p).sum(1) - b  # (N,) signed residual; the move must change w.p by -h
    r = h.abs()
    v = torch.where(h[:, None] > 0, -w, w)  # (N, D) now v.d must grow by r
    direction = v.sign()  # each coordinate moves this way (0: not at all)
    room = torch.where(v > 0, hi - p, p - lo).clamp_min(0) * (v != 0)  # (N, D) distance to the face
    mag = v.abs()
    slope = mag if norm == "linf" else mag * mag
    cap = mag * room  # the most coordinate i can add to v.d
    moving = slope > 0
    brk = torch.where(moving, cap / torch.where(moving, slope, 1.0), torch.inf)  # breakpoints; idle: never

    brk_s, order = brk.sort(dim=1)  # (N, D) ascending
    cap_s, slope_s = cap.gather(1, order), slope.gather(1, order)
    saturated = F.pad(cap_s.cumsum(1)[:, :-1], (1, 0))  # C_k: caps of the coordinates before k
    free = slope_s.flip(1).cumsum(1).flip(1)  # S_k: slopes from k on (exactly 0 after the last mover)
    gain = saturated + torch.where(free > 0, brk_s * free, 0.0)  # F at each breakpoint, (N, D)
    gain = gain.cummax(dim=1).values  # monotone in exact arithmetic; guard rounding before the search
    k = torch.searchsorted(gain, r[:, None].contiguous())  # (N, 1): first breakpoint with F >= r
    reachable = k.squeeze(1) < gain.shape[1]
    kc = k.clamp_max(gain.shape[1] - 1)
    s_k = free.gather(1, kc).squeeze(1)
    lam = torch.where(s_k > 0, (r - saturated.gather(1, kc).squeeze(1)) / torch.where(s_k > 0, s_k, 1.0), 0.0)
    lam = lam.clamp_min(0)[:, None]  # (N, 1)

    step = lam if norm == "linf" else lam * mag
    d = direction * torch.minimum(step, room)
    return torch.where(reachable[:, None], d, direction * room)
