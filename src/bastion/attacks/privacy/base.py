"""The membership-inference contract. `MembershipAttack.run` is final: it checks the candidates, asks
the model once per candidate through an `Oracle` (score access: a deployed API that returns scores),
lets the subclass turn the answers into one score per candidate (higher = more likely a member of the
training set) and measures the scores against the truth as a `DetectionResult` (positive = member).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.attacks.base import Attack
from bastion.core.errors import DataError
from bastion.core.results import DetectionResult
from bastion.core.threat import Access
from bastion.core.victim import Victim

__all__ = ["MembershipAttack", "log_probs_and_complements"]


def log_probs_and_complements(logits: Tensor) -> tuple[Tensor, Tensor]:
    """`(log p, log(1 - p))`, both (N, K) in float64, from logits (N, K), without rounding 1 - p to 0.

    The most likely class is where precision matters (a confident answer, the mark of a member): with
    `r` the `logsumexp` of the other logits, its `log p = -softplus(r - z_top)` keeps the tiny distance
    to 0 that `z - logsumexp(z)` rounds away, and `log(1 - p) = r - logsumexp(z)`. For the other
    classes `p <= 1/2`, where `z - logsumexp(z)` and `log1p(-p)` are exact.
    """
    z = logits.double()
    total = torch.logsumexp(z, dim=1, keepdim=True)  # (N, 1)
    log_p = z - total
    log_q = torch.log1p(-log_p.exp())  # (N, K)
    top = z.argmax(dim=1, keepdim=True)  # (N, 1): the only class that can have p > 1/2
    z_top = z.gather(1, top)
    rest = torch.logsumexp(z.scatter(1, top, -torch.inf), dim=1, keepdim=True)  # (N, 1)
    log_p = log_p.scatter(1, top, -F.softplus(rest - z_top))
    return log_p, log_q.scatter(1, top, rest - total)


@dataclass(frozen=True, kw_only=True)
class MembershipAttack(Attack, ABC):
    """Base of the membership-inference attacks (family `membership`): one score per candidate from the
    model's answer to that candidate, higher meaning "more likely in the training set"."""

    family: ClassVar[str] = "membership"
    access: ClassVar[Access] = "scores"

    @abstractmethod
    def _score(self, logits: Tensor, y: Tensor) -> Tensor:
        """Scores (N,) from the served logits (N, K) of the candidates and their labels (N,)."""

    def _extra(self, scores: Tensor, member: Tensor) -> dict[str, object]:
        """Attack-specific records (plain JSON types)."""
        return {}

    @final
    def run(self, victim: Victim, x: Tensor, y: Tensor, member: Tensor) -> DetectionResult:
        """Score the candidates (x, y) and measure the scores against `member` (N,), the truth.

        Args:
            victim: the model whose training set is attacked; queried once per candidate.
            x: candidate images (N, C, H, W) inside the victim's bounds.
            y: their labels (N,).
            member: which candidates are members of the training set (N,); both kinds must occur.
        """
        victim.check_input(x)
        n = x.shape[0]
        if not isinstance(y, Tensor) or y.shape != (n,) or not isinstance(member, Tensor) or member.shape != (n,):
            raise DataError(f"labels and membership must be tensors (N,) with N = {n}")
        if bool(member.all()) or not bool(member.any()):
            raise DataError("membership inference is measured on positives and negatives: give members and non-members")
        start = time.perf_counter()
        oracle = victim.oracle(n, output="logits", max_queries=1)  # one query per candidate, never more
        logits = oracle.query(x.to(victim.device))
        scores = self._score(logits, y.to(victim.device, torch.long))
        member = member.to(scores.device, torch.bool)
        return DetectionResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            scores=scores.cpu(),
            positive=member.cpu(),
            seconds=time.perf_counter() - start,
            queries=oracle.queries.cpu(),
            extra=self._extra(scores, member),
        )
