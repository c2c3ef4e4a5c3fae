"""The membership-inference contract. `MembershipAttack.run` is final: it checks the candidates, asks
the model once per candidate through an `Oracle` (score access: a deployed API that returns scores),
lets the subclass turn the answers into one score per candidate (higher = more likely a member of the
training set) and measures the scores against the truth as a `DetectionResult` (positive = member).

With `thresholds="class"` the attacker also knows the membership of some candidates and fits one
threshold per class on them (Song & Mittal's class-dependent thresholds); the others are measured.

An attack may ask about several views of each candidate (`views`: LiRA's image and mirror), one query
per candidate and view, and may compare the answers with shadow models (`needs_reference`): it then
`fit`s them on the population first and `run` takes their statistics as `reference`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, final

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.attacks.base import Attack
from bastion.attacks.privacy._shadows import ShadowReference, ShadowTrainer
from bastion.core.errors import ConfigError, DataError
from bastion.core.params import param
from bastion.core.random import make_generator
from bastion.core.results import DetectionResult
from bastion.core.threat import Access
from bastion.core.victim import Victim

__all__ = ["MembershipAttack", "best_threshold", "class_thresholds", "known_split", "log_probs_and_complements"]


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


def best_threshold(members: Tensor, others: Tensor) -> float:
    """The threshold `t` that maximises the balanced accuracy of "member when score >= t" on known
    members and non-members, among the scores themselves; the first of equals in the order members,
    non-members (the rule of Song & Mittal's reference, `_thre_setting`)."""
    values = torch.cat([members, others])
    tpr = (members[None, :] >= values[:, None]).double().mean(dim=1)
    tnr = (others[None, :] < values[:, None]).double().mean(dim=1)
    return float(values[torch.argmax(tpr + tnr)])


def class_thresholds(scores: Tensor, y: Tensor, member: Tensor, num_classes: int) -> tuple[Tensor, list[int]]:
    """One threshold per class (K,) fitted by `best_threshold` on the known candidates of that class.

    A class without known members or without known non-members gets the threshold fitted on all known
    candidates; those classes are returned beside the thresholds.
    """
    overall = best_threshold(scores[member], scores[~member])
    out = torch.full((num_classes,), overall, dtype=scores.dtype, device=scores.device)
    pooled = []
    for c in range(num_classes):
        own = y == c
        if bool((own & member).any()) and bool((own & ~member).any()):
            out[c] = best_threshold(scores[own & member], scores[own & ~member])
        else:
            pooled.append(c)
    return out, pooled


def known_split(member: Tensor, fraction: float, seed: int) -> Tensor:
    """Which candidates (N,) the attacker knows: a seeded `fraction` of the members and as large a share
    of the non-members, drawn apart so both keep their proportions; at least one of each stays unknown."""
    gen = make_generator(seed)
    known = torch.zeros_like(member, dtype=torch.bool)
    for side in (member, ~member):
        idx = side.nonzero().squeeze(1)
        take = min(max(1, round(fraction * idx.numel())), idx.numel() - 1)
        known[idx[torch.randperm(idx.numel(), generator=gen)[:take]]] = True
    return known


@dataclass(frozen=True, kw_only=True)
class MembershipAttack(Attack, ABC):
    """Base of the membership-inference attacks (family `membership`): one score per candidate from the
    model's answer to that candidate, higher meaning "more likely in the training set".

    `thresholds` picks how scores become decisions. `global`: one threshold for every candidate, swept
    by the threshold-free metrics (AUROC, TPR at low FPR); the attacker needs no known member. `class`:
    Song & Mittal's class-dependent thresholds (USENIX Security 2021, arXiv 2003.10595; reference
    `inspire-group/membership-inference-evaluation`): the attacker knows the membership of some
    candidates (`known` in `run`, else a seeded `known_fraction` of each side), fits per class the
    threshold of best balanced accuracy on them, and scores every other candidate `s - t_y`, so that 0
    is the paper's decision and sweeping it gives the ROC. Only the candidates the attacker did not know
    are measured. A class's scores often sit on their own scale (some digits are answered more
    confidently than others, member or not); one threshold per class removes that.
    """

    family: ClassVar[str] = "membership"
    access: ClassVar[Access] = "scores"
    # Whether the attack compares the model with shadow models (`run(..., reference=...)`).
    needs_reference: ClassVar[bool] = False

    thresholds: Literal["global", "class"] = param(
        "global", help="global: one threshold for all; class: per-class thresholds fitted on known candidates"
    )
    known_fraction: float = param(
        0.5, gt=0, lt=1, help="with class thresholds: share of members and of non-members the attacker knows"
    )

    @abstractmethod
    def _score(self, logits: Tensor, y: Tensor) -> Tensor:
        """Scores (N,) from the served logits (N, K) of the candidates and their labels (N,)."""

    def views(self, x: Tensor) -> list[Tensor]:
        """The queries made of the candidates x (N, C, H, W): each is one query per candidate. The
        candidates themselves unless the attack also asks about augmented copies (LiRA's mirror)."""
        return [x]

    def fit(self, x: Tensor, y: Tensor, train: ShadowTrainer) -> ShadowReference:
        """The shadow models' reference on the population (x, y), for an attack that `needs_reference`;
        `train(x_i, y_i, i)` trains shadow i like the target."""
        raise ConfigError(f"{self.name} uses no shadow models")

    def _score_views(self, logits: Tensor, y: Tensor, reference: ShadowReference | None) -> Tensor:
        """Scores (N,) from the answers to every view (A, N, K); the single view's `_score` by default."""
        return self._score(logits[0], y)

    def _extra(self, scores: Tensor, member: Tensor) -> dict[str, object]:
        """Attack-specific records (plain JSON types)."""
        return {}

    @final
    def run(
        self,
        victim: Victim,
        x: Tensor,
        y: Tensor,
        member: Tensor,
        known: Tensor | None = None,
        reference: ShadowReference | None = None,
    ) -> DetectionResult:
        """Score the candidates (x, y) and measure the scores against `member` (N,), the truth.

        Args:
            victim: the model whose training set is attacked; queried once per candidate and view
                (`views`: once, or twice with LiRA's mirror).
            x: candidate images (N, C, H, W) inside the victim's bounds.
            y: their labels (N,).
            member: which candidates are members of the training set (N,); both kinds must occur.
            known: with `thresholds="class"`, the candidates (N,) whose membership the attacker knows
                (fitted on, not measured); None draws a seeded `known_fraction` of each side.
            reference: for an attack that `needs_reference` (LiRA), the shadow models' statistics on these
                same candidates, in this order (`LiRA.fit`); never built from `member`.
        """
        victim.check_input(x)
        n = x.shape[0]
        if not isinstance(y, Tensor) or y.shape != (n,) or not isinstance(member, Tensor) or member.shape != (n,):
            raise DataError(f"labels and membership must be tensors (N,) with N = {n}")
        member = member.to(torch.bool)
        if bool(member.all()) or not bool(member.any()):
            raise DataError("membership inference is measured on positives and negatives: give members and non-members")
        if self.needs_reference and reference is None:
            raise ConfigError(f"{self.name} compares the model with shadow models: give their reference (LiRA.fit)")
        if not self.needs_reference and reference is not None:
            raise ConfigError(f"{self.name} uses no shadow models; it takes no reference")
        if reference is not None and reference.phi.shape[1] != n:
            raise DataError(f"the shadow reference covers {reference.phi.shape[1]} candidates; {n} were given")
        if self.thresholds == "global" and known is not None:
            raise ConfigError("known candidates are used by thresholds='class' only")
        if self.thresholds == "class":
            known = known_split(member, self.known_fraction, self.seed) if known is None else known
            if not isinstance(known, Tensor) or known.shape != (n,):
                raise DataError(f"known must be a tensor (N,) with N = {n}")
            known = known.to(torch.bool)
            for name, side in (("members", member), ("non-members", ~member)):
                if not bool((side & known).any()) or not bool((side & ~known).any()):
                    raise DataError(f"class thresholds need known and unknown {name}")
        start = time.perf_counter()
        queries = self.views(x)
        oracle = victim.oracle(n, output="logits", max_queries=len(queries))  # one per candidate and view
        logits = torch.stack([oracle.query(v.to(victim.device)) for v in queries])  # (A, N, K)
        y = y.to(victim.device, torch.long)
        scores = self._score_views(logits, y, reference)
        member = member.to(scores.device)
        measured = torch.ones_like(member) if known is None else ~known.to(scores.device)
        extra = self._extra(scores[measured], member[measured])
        decision = scores[measured]
        warnings: tuple[str, ...] = ()
        if known is not None:
            fit = ~measured
            cut, pooled = class_thresholds(scores[fit], y[fit], member[fit], logits.shape[2])
            decision = decision - cut[y[measured]]
            extra |= {"known": int(fit.sum()), "class_thresholds": cut.tolist(), "pooled_classes": pooled}
            if pooled:
                warnings = (
                    f"classes {pooled} lack known members or non-members: they use the threshold fitted on all classes",
                )
        return DetectionResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            scores=decision.cpu(),
            positive=member[measured].cpu(),
            seconds=time.perf_counter() - start,
            queries=oracle.queries[measured].cpu(),
            warnings=warnings,
            extra=extra,
        )
