"""What the gradient-estimation attacks (`nes`, `bandits`) share: the query-counted PGD loop around an
estimator, the loss they climb, and the image step of each norm.

Each step of a sample estimates the gradient of its loss from finite differences (the subclass's
`_estimate`, paying `_probe_cost()` queries), takes one PGD step with it, projects onto the ball and
the bounds, and pays one query more to look at the new image: that answer decides success, so a
sample is never declared fooled from an unpaid prediction. A step starts only when the sample can
afford all of it, within the attack's `n_queries` and the oracle's budget.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bastion.attacks.evasion._active import Retire, State
from bastion.attacks.evasion._gradient import normalize_l2
from bastion.attacks.evasion._losses import make_loss, misclassified
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.ops import project
from bastion.core.oracle import Oracle, OutputMode
from bastion.core.progress import report
from bastion.core.threat import Access, Norm

__all__ = ["EstimationAttack", "ce_objective", "clipped_probe"]


def ce_objective(logits: Tensor, st: State) -> Tensor:
    """The loss the estimators climb (M,): CE to the true label, or -CE to the target (targeted)."""
    return make_loss("ce", st["y"], st.get("t"))(logits)


def clipped_probe(x: Tensor, direction: Tensor, bounds: tuple[float, float]) -> Tensor:
    """x + direction, clipped to the bounds: an API takes only valid images (the references skip this)."""
    return (x + direction).clamp(*bounds)


@dataclass(frozen=True, kw_only=True)
class EstimationAttack(EvasionAttack):
    """Base of the score-based attacks that climb the loss with an estimated gradient.

    A subclass declares `n_queries` and implements `_probe_cost`, `_lr`, `_init_state` and `_estimate`.
    Queries per step: `_probe_cost()` for the estimate plus 1 for the success check; a sample never
    fooled spends `floor(budget / cost) * cost` queries, where budget is the smaller of `n_queries`
    and the oracle's per-sample budget.
    """

    access: ClassVar[Access] = "scores"
    oracle_output: ClassVar[OutputMode] = "logits"
    norms: ClassVar[tuple[Norm, ...]] = ("linf", "l2")
    targeted_ok: ClassVar[bool] = True
    progress_every: ClassVar[int] = 10

    n_queries: int

    @abstractmethod
    def _probe_cost(self) -> int:
        """Queries one gradient estimate costs per sample."""

    @abstractmethod
    def _lr(self) -> float:
        """The image step size."""

    def _init_state(self, st: State, gen: torch.Generator) -> State:
        """Add the estimator's own per-sample state (e.g. a prior) to `st`."""
        return st

    @abstractmethod
    def _estimate(self, oracle: Oracle, st: State, gen: torch.Generator) -> tuple[Tensor, State]:
        """(gradient estimate (M, C, H, W) at st["x"], the state updated) after `_probe_cost()` queries."""

    def _step_cost(self) -> int:
        return self._probe_cost() + 1

    def _perturb(self, oracle: Oracle, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        n, cost, gen = x.shape[0], self._step_cost(), ctx.gen
        x_adv = x.clone()
        retire = Retire(x_adv, lambda s: s["x"], oracle, ctx.trace)  # a leaving sample's result: its last image
        st: State = {"ids": torch.arange(n, device=x.device), "x0": x, "x": x.clone(), "y": y}
        if ctx.target_labels is not None:
            st["t"] = ctx.target_labels
        st = self._init_state(st, gen)
        total = oracle.budget(self.n_queries) // cost  # the steps of a sample never fooled
        step = 0
        while st["ids"].numel():
            st = retire.spent(st, cost, self.n_queries)  # a step is taken whole or not at all
            if not st["ids"].numel():
                break
            g, st = self._estimate(oracle, st, gen)
            st["x"] = self._image_step(st["x"], st["x0"], g)
            logits = oracle.query(st["x"], st["ids"])  # the paid success check
            st = retire.fooled(st, misclassified(logits, st["y"], st.get("t")))
            step += 1
            if step % self.progress_every == 0:
                report(ctx.progress, self.name, step, total)
        return x_adv

    def _image_step(self, x: Tensor, x0: Tensor, g: Tensor) -> Tensor:
        """One PGD step along the estimate: lr * sign(g) (L-inf) or lr * g / ||g||_2 (L2), projected."""
        step = g.sign() if self.threat.norm == "linf" else normalize_l2(g)
        return project(x + self._lr() * step, x0, self.threat.norm, self.threat.eps, self.threat.bounds)
