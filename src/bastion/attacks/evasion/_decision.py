"""What the label-only attacks that walk the decision boundary share (`hsja`, `sign-opt`, `cgba`, `cgba-h`).

`Decision` is the oracle as they see it: whether points are adversarial for their samples (one paid query each),
the closest adversarial input found so far per sample with its query-trace record, the queries a sample may
still send, and the bisection of a bracket between a clean and an adversarial end. `sample_generators` gives
each sample its own random stream, so that its result does not depend on the batch it is attacked in, and
`checked_pool` checks a user's starting images.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
from torch import Tensor

from bastion.attacks.evasion._trace import QueryTrace
from bastion.core.errors import DataError
from bastion.core.ops import lp_norms
from bastion.core.oracle import Oracle

__all__ = ["Decision", "checked_pool", "sample_generators"]

# probe(r, mid): whether the midpoints `mid` of rows `r` (positions in the bisected ids) are adversarial, paid for
Probe = Callable[[Tensor, Tensor], Tensor]
# is_open(r, clean, adv): whether the brackets [clean, adv] of rows `r` are still to be narrowed
IsOpen = Callable[[Tensor, Tensor, Tensor], Tensor]


class Decision:
    """A label-only oracle seen from the decision boundary, for the n samples of one run.

    Args:
        oracle: the oracle of the run (label output).
        x: the clean inputs (n, C, H, W).
        y: their labels (n,).
        target: the target labels (n,) of a targeted attack, else None.
        norm: the norm in which distances to the clean inputs are measured (`l2` or `linf`).
        trace: the run's query-efficiency records, or None.
        cap: the attack's own per-sample query budget (`None`: the oracle's alone).
        reserve: queries `room` keeps back by default (e.g. for a final check).

    Attributes:
        best_x: the closest adversarial input found so far per sample (n, C, H, W); the clean input until one is.
        best_d: its distance to the clean input in `norm` (n,); inf while there is none.
    """

    def __init__(
        self,
        oracle: Oracle,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        *,
        norm: str,
        trace: QueryTrace | None,
        cap: int | None,
        reserve: int = 0,
    ) -> None:
        self.oracle, self.x, self.y, self.target = oracle, x, y, target
        self.norm, self.trace, self.cap, self.reserve = norm, trace, cap, reserve
        self.best_x = x.clone()
        self.best_d = torch.full((x.shape[0],), math.inf, device=x.device)

    def room(self, ids: Tensor, reserve: int | None = None) -> Tensor:
        """Queries samples `ids` may still send (M,), within the attack's cap and the oracle's budget, less
        `reserve` (default: the one given at construction)."""
        return self.oracle.remaining(ids, cap=self.cap, reserve=self.reserve if reserve is None else reserve)

    def adversarial(self, pts: Tensor, ids: Tensor) -> Tensor:
        """Query the rows `pts` (R, C, H, W) of samples `ids` (R,): whether each is adversarial (R,), i.e. labelled
        other than y (untargeted) or as the target (targeted). The caller has checked the budget."""
        labels = self.oracle.query(pts, ids)
        return labels == self.target[ids] if self.target is not None else labels != self.y[ids]

    def offer(self, ids: Tensor, pts: Tensor) -> None:
        """Adversarial inputs `pts` of distinct samples `ids`: each closer than its sample's best becomes the best,
        and goes to the trace with its distance and the queries its sample has spent."""
        if ids.numel() == 0:
            return
        dist = lp_norms(pts - self.x[ids], self.norm)
        better = dist < self.best_d[ids]
        if bool(better.any()):
            i = ids[better]
            self.best_x[i], self.best_d[i] = pts[better], dist[better]
            if self.trace is not None:
                self.trace.adversarial(i, self.oracle.queries[i], dist[better])

    def bisect(
        self,
        ids: Tensor,
        clean: Tensor,
        adv: Tensor,
        probe: Probe,
        is_open: IsOpen,
        *,
        start: Tensor | None = None,
        max_steps: int | None = None,
    ) -> Tensor:
        """Bisect each bracket [clean, adv] of samples `ids` (distinct) and return its adversarial end.

        The ends are per-row tensors of any shape (a scalar along a path, or the points themselves); each step
        probes the midpoints (clean + adv) / 2 of the rows still going, in one batch, and the midpoint replaces
        the end of its kind. A row stops when `is_open` says its bracket is narrow enough, when its sample has
        no `room` left (so no budget is ever exceeded), or after `max_steps` steps.

        Args:
            ids: the samples (M,).
            clean, adv: the ends (M, ...): not adversarial, adversarial.
            probe: whether the midpoints of rows r are adversarial; it queries them (and may `offer` them).
            is_open: whether the brackets of rows r go on; decides which rows start too, unless `start` does.
            start: (M,) bool, the rows that take a first step whatever their bracket.
            max_steps: the most steps (`None`: until every row has stopped).
        """
        clean, adv = clean.clone(), adv.clone()
        every = torch.arange(ids.numel(), device=ids.device)
        going = is_open(every, clean, adv) if start is None else start.clone()
        steps = 0
        while max_steps is None or steps < max_steps:
            going &= self.room(ids) > 0
            r = going.nonzero().squeeze(1)
            if r.numel() == 0:
                break
            mid = (clean[r] + adv[r]) / 2
            hit = probe(r, mid).view(-1, *([1] * (mid.dim() - 1)))
            adv[r] = torch.where(hit, mid, adv[r])
            clean[r] = torch.where(hit, clean[r], mid)
            going[r] = is_open(r, clean[r], adv[r])
            steps += 1
        return adv


def sample_generators(x: Tensor, gen: torch.Generator) -> list[torch.Generator]:
    """One generator per sample, seeded by one draw of `gen` and the sample's own pixels.

    A sample's random draws then depend on the run's seed and on that sample only, never on its position
    in the batch or on the other samples attacked with it.
    """
    root = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
    key = root.to_bytes(8, "little")
    gens = []
    for row in x.detach().to("cpu", torch.float32).contiguous():
        digest = hashlib.blake2b(row.numpy().tobytes(), digest_size=8, key=key).digest()
        g = torch.Generator(device=x.device)
        g.manual_seed(int.from_bytes(digest, "little") >> 1)
        gens.append(g)
    return gens


def checked_pool(name: str, pool: Tensor | None, x: Tensor, bounds: tuple[float, float]) -> Tensor | None:
    """A user's starting images (P, C, H, W) checked against the inputs and the bounds, on their device."""
    if pool is None:
        return None
    if not isinstance(pool, Tensor) or pool.dim() != x.dim() or pool.shape[1:] != x.shape[1:]:
        got = tuple(pool.shape) if isinstance(pool, Tensor) else type(pool).__name__
        raise DataError(f"{name}: init_pool must be images (P, {', '.join(map(str, x.shape[1:]))}); got {got}")
    lo, hi = bounds
    if pool.numel() and (float(pool.min()) < lo or float(pool.max()) > hi):
        raise DataError(f"{name}: init_pool values must lie in the bounds [{lo}, {hi}]")
    return pool.to(x.device, x.dtype)
