"""`apgd-ce`, `apgd-dlr`, `apgd-t`: Auto-PGD (L-inf and L2), one batched core with an active set.

Croce & Hein, arXiv 2003.01690, section 3, with the details of the reference `fra31/auto-attack`
(`autoattack/autopgd_base.py`). One run of `apgd_run`:

- start at `x + eps * t / ||t||`, clipped to the bounds (L-inf: t ~ U(-1, 1), so the largest
  coordinate sits at eps; L2: t ~ N(0, I), on the sphere);
- step size 2 * eps per sample; `u = P(x_i + step * sign(g))` (L2: `g / ||g||_2`), then
  `x_{i+1} = P(x_i + a (u - x_i) + (1 - a)(x_i - x_{i-1}))` with a = 1 at the first step, else 0.75;
- the best-loss point and its gradient are kept; at the checkpoints of `checkpoint_schedule` a
  sample's step is halved, and it returns to its best point, when its loss rose in at most
  `rho * k` of the window's k steps, or when the last checkpoint did not halve and the best loss
  has not improved since.

A sample leaves the computation at its first misclassified iterate (the start included), which is
its result; the reference keeps iterating it and may overwrite that point with a later
misclassified one, which changes nothing for the other samples. Restarts (and APGD-T's targets)
run only on the samples still robust.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._gradient import loss_and_grad, normalize_l2
from bastion.attacks.evasion._losses import ce, dlr, dlr_targeted
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.errors import ConfigError
from bastion.core.ops import project
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.victim import Victim

__all__ = ["APGDCE", "APGDDLR", "APGDT", "RunOutcome", "apgd_run", "checkpoint_schedule"]

# Samples that become misclassified are dropped from every per-sample tensor at once. Off (tests
# only), they keep iterating but record nothing more: the results must be the same either way.
_COMPACT = True

# loss(logits (N, K), y (N,), target (N,) or None) -> (N,), to be maximised
APGDLoss = Callable[[Tensor, Tensor, Tensor | None], Tensor]
_LossKind = Literal["ce", "dlr", "dlr-targeted"]


def _ce(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
    return ce(z, y)


def _dlr(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
    return dlr(z, y)


def _dlr_targeted(z: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
    assert t is not None
    return dlr_targeted(z, y, t)


_LOSSES: dict[_LossKind, tuple[APGDLoss, int, str]] = {  # loss, fewest classes, name in messages
    "ce": (_ce, 2, "cross-entropy"),
    "dlr": (_dlr, 3, "DLR"),
    "dlr-targeted": (_dlr_targeted, 4, "targeted DLR"),
}


def checkpoint_schedule(steps: int) -> list[int]:
    """The iterations (1-based, cumulative) after which APGD may halve its step size.

    The first window is max(floor(0.22 N), 1) iterations; each next one is shorter by
    max(floor(0.03 N), 1), down to max(floor(0.06 N), 1) (the reference's constants). For N = 100:
    [22, 41, 57, 70, 80, 87, 93, 99].
    """
    window = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out: list[int] = []
    at = window
    while at <= steps:
        out.append(at)
        window = max(window - shrink, shortest)
        at += window
    return out


@dataclass
class _Active:
    """Per-sample state of the samples still attacked; row i is sample `pos[i]` of the run's batch."""

    pos: Tensor  # (n,) long
    x: Tensor  # (n, C, H, W) clean inputs
    y: Tensor  # (n,)
    t: Tensor | None  # (n,) targets, or None
    x_cur: Tensor  # (n, C, H, W) current iterate
    x_prev: Tensor  # previous iterate (momentum)
    grad: Tensor  # gradient at x_cur (or the best point's after a halving)
    x_best: Tensor  # highest-loss point so far, and its gradient
    grad_best: Tensor
    loss: Tensor  # (n,) loss at x_cur
    loss_prev: Tensor  # (n,) loss of the previous iterate (oscillation count)
    loss_best: Tensor  # (n,)
    loss_best_last: Tensor  # (n,) loss_best at the last checkpoint
    n_up: Tensor  # (n,) long: steps of this window whose loss rose
    reduced_last: Tensor  # (n,) bool: the step was halved at the last checkpoint
    step: Tensor  # (n, 1, 1, 1) step size
    live: Tensor  # (n,) bool: not yet recorded as fooled (all True while compacting)

    def keep(self, mask: Tensor) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, value[mask])


@dataclass
class RunOutcome:
    """What one APGD run found, per sample of its batch (N,)."""

    fooled: Tensor  # (N,) bool: some iterate was misclassified
    x_adv: Tensor  # (N, C, H, W): the recorded iterate where fooled, else the clean input
    zero_grad: Tensor  # (N,) bool: all-zero gradient at a correctly classified start
    nan_grad: Tensor  # (N,) bool: a NaN in the gradient at the start


def _start(x: Tensor, norm: str, eps: float, gen: torch.Generator) -> Tensor:
    """L-inf: x + eps * t / ||t||_inf, t ~ U(-1, 1); L2: x + eps * t / ||t||_2, t ~ N(0, I)."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=gen, device=gen.device).to(x.device) - 1
        scale = t.flatten(1).abs().amax(dim=1).view(-1, *([1] * (x.dim() - 1)))
        return x + eps * (t / (scale + 1e-12))
    t = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
    return x + eps * normalize_l2(t)


def apgd_run(
    victim: Victim,
    x: Tensor,
    y: Tensor,
    target: Tensor | None,
    loss: APGDLoss,
    *,
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    steps: int,
    rho: float,
    gen: torch.Generator,
    on_step: Callable[[int], None] | None = None,
) -> RunOutcome:
    """One APGD run of `steps` iterations on the batch (x, y) (see the module docstring).

    Success is any misclassification, also for a targeted loss. `on_step(i)` is called after
    iteration i (1-based); when every sample is fooled early it is called once with `steps`.
    """
    n, dev = x.shape[0], x.device
    ones = [1] * (x.dim() - 1)
    fooled = torch.zeros(n, dtype=torch.bool, device=dev)
    x_adv = x.clone()

    x0 = _start(x, norm, eps, gen).clamp(*bounds)
    logits, loss0, grad = loss_and_grad(victim, x0, lambda z: loss(z, y, target))
    # only samples still correct at the start count: the DLR loss of one misclassified with y ranked
    # third is the constant 1, a zero gradient that masks nothing (the reference counts those too)
    zero_grad = (grad.flatten(1).abs().sum(dim=1) == 0) & (logits.argmax(dim=1) == y)
    nan_grad = grad.flatten(1).isnan().any(dim=1)
    grad = torch.nan_to_num(grad, nan=0.0)  # a NaN gradient means no move, not a NaN iterate
    s = _Active(
        pos=torch.arange(n, device=dev),
        x=x,
        y=y,
        t=target,
        x_cur=x0,
        x_prev=x0,
        grad=grad,
        x_best=x0,
        grad_best=grad,
        loss=loss0,
        # the reference compares the first loss of the first window with an unset (zero) history
        # slot instead of the starting loss; kept for parity (it can move one count by one)
        loss_prev=torch.zeros_like(loss0),
        loss_best=loss0,
        loss_best_last=loss0,
        n_up=torch.zeros(n, dtype=torch.long, device=dev),
        reduced_last=torch.ones(n, dtype=torch.bool, device=dev),
        step=torch.full((n, *ones), 2.0 * eps, dtype=x.dtype, device=dev),
        live=torch.ones(n, dtype=torch.bool, device=dev),
    )

    def record(logits: Tensor) -> bool:
        """Record the rows misclassified at x_cur and drop them; False when no sample is left."""
        hit = (logits.argmax(dim=1) != s.y) & s.live  # (n,)
        if not bool(hit.any()):  # the one host sync per iteration: compaction needs the new size
            return True
        x_adv[s.pos[hit]] = s.x_cur[hit]
        fooled[s.pos[hit]] = True
        if _COMPACT:
            s.keep(~hit)
            return s.pos.numel() > 0
        s.live = s.live & ~hit
        return True

    if not record(logits):
        return RunOutcome(fooled, x_adv, zero_grad, nan_grad)

    checks = checkpoint_schedule(steps)
    next_check, window_start = 0, 0
    for i in range(steps):
        with torch.no_grad():
            a = 1.0 if i == 0 else 0.75
            move = s.grad.sign() if norm == "linf" else normalize_l2(s.grad)
            u = project(s.x_cur + s.step * move, s.x, norm, eps, bounds)
            x_next = project(s.x_cur + (u - s.x_cur) * a + (s.x_cur - s.x_prev) * (1 - a), s.x, norm, eps, bounds)
            s.x_prev, s.x_cur = s.x_cur, x_next

        logits, s.loss, grad = loss_and_grad(victim, s.x_cur, lambda z: loss(z, s.y, s.t))
        s.grad = torch.nan_to_num(grad, nan=0.0)
        if not record(logits):
            if on_step is not None:
                on_step(steps)
            break

        with torch.no_grad():
            better = s.loss > s.loss_best  # (n,)
            better4 = better.view(-1, *ones)
            s.x_best = torch.where(better4, s.x_cur, s.x_best)
            s.grad_best = torch.where(better4, s.grad, s.grad_best)
            s.loss_best = torch.where(better, s.loss, s.loss_best)
            s.n_up = s.n_up + (s.loss > s.loss_prev)
            s.loss_prev = s.loss

            if next_check < len(checks) and i + 1 == checks[next_check]:
                k = checks[next_check] - window_start
                halve = (s.n_up <= rho * k) | (~s.reduced_last & (s.loss_best_last >= s.loss_best))
                halve4 = halve.view(-1, *ones)
                s.step = torch.where(halve4, s.step / 2, s.step)
                s.x_cur = torch.where(halve4, s.x_best, s.x_cur)  # x_prev stays: momentum from there
                s.grad = torch.where(halve4, s.grad_best, s.grad)
                s.reduced_last = halve
                s.loss_best_last = s.loss_best
                s.n_up = torch.zeros_like(s.n_up)
                window_start = checks[next_check]
                next_check += 1
        if on_step is not None:
            on_step(i + 1)
    return RunOutcome(fooled, x_adv, zero_grad, nan_grad)


@dataclass(frozen=True, kw_only=True)
class _APGD(EvasionAttack):
    """The three APGD attacks: parameters, runs on the still-robust samples, gradient checks."""

    loss_kind: ClassVar[_LossKind] = "ce"

    steps: int = param(100, ge=1, help="iterations per run")
    n_restarts: int = param(1, ge=1, help="random restarts (each on the samples still robust)")
    rho: float = param(0.75, ge=0, le=1, help="halve the step when the loss rose in at most rho of a window")

    def _target_ranks(self, num_classes: int, ctx: RunContext) -> list[int | None]:
        """One entry per run: the rank of the target among the clean logits (2 = second largest), or None."""
        return [None] * self.n_restarts

    def _perturb(self, victim: Victim, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        loss, fewest, loss_name = _LOSSES[self.loss_kind]
        num_classes = victim.num_classes
        if num_classes < fewest:
            raise ConfigError(
                f"{self.name}: the {loss_name} loss needs at least {fewest} classes; the model has {num_classes} "
                "(use apgd-ce)"
            )
        ranks = self._target_ranks(num_classes, ctx)
        n, dev = x.shape[0], x.device
        x_adv = x.clone()
        robust = torch.ones(n, dtype=torch.bool, device=dev)
        zero_grad = torch.zeros(n, dtype=torch.bool, device=dev)
        nan_grad = torch.zeros(n, dtype=torch.bool, device=dev)
        total = self.steps * len(ranks)
        for r, rank in enumerate(ranks):
            idx = robust.nonzero().squeeze(1)  # the samples this run attacks
            if idx.numel() == 0:
                break
            # as the reference: the class at position -rank of the clean logits sorted ascending
            target = None if rank is None else victim.logits(x[idx]).sort(dim=1)[1][:, -rank]
            out = apgd_run(
                victim,
                x[idx],
                y[idx],
                target,
                loss,
                norm=self.threat.norm,
                eps=self.threat.eps,
                bounds=self.threat.bounds,
                steps=self.steps,
                rho=self.rho,
                gen=ctx.gen,
                on_step=lambda i, r=r: report(ctx.progress, self.name, r * self.steps + i, total),
            )
            x_adv[idx[out.fooled]] = out.x_adv[out.fooled]
            robust[idx[out.fooled]] = False
            zero_grad[idx[out.zero_grad]] = True
            nan_grad[idx[out.nan_grad]] = True
        report(ctx.progress, self.name, total, total)
        self._warn(ctx, n, int(zero_grad.sum()), int(nan_grad.sum()))
        return x_adv

    def _warn(self, ctx: RunContext, n: int, n_zero: int, n_nan: int) -> None:
        # the reference checks zero gradients on DLR runs only: CE saturates legitimately at high confidence
        if self.loss_kind != "ce" and n_zero:
            ctx.warnings.append(
                f"{self.name}: {n_zero} of {n} samples have an all-zero gradient at the start: the robustness "
                "number is probably overestimated (gradient masking)"
            )
        if n_nan:
            ctx.warnings.append(
                f"{self.name}: {n_nan} of {n} samples have a NaN gradient at the start (treated as zero): the "
                "robustness number is probably overestimated (a broken gradient)"
            )


@register_attack("apgd-ce")
@dataclass(frozen=True, kw_only=True)
class APGDCE(_APGD):
    """APGD on the cross-entropy loss. Croce & Hein, "Reliable evaluation of adversarial robustness with an
    ensemble of diverse parameter-free attacks", arXiv 2003.01690.

    The first stage of AutoAttack "standard". The algorithm is in this module's docstring. Defaults:
    100 iterations, rho = 0.75 and the 2 * eps initial step are the paper's and the reference's;
    one restart is what AutoAttack "standard" runs (its "plus" version runs 5).

    Reproduces: as stages of AutoAttack, the README's Madry MNIST (eps = 0.3) robust accuracy of 88.50%
    (clean 98.53%). The CPU check compares robust accuracy with the `fra31/auto-attack` snapshot on the
    same images and seed (`benchmarks/evasion_peers.py`).
    """

    loss_kind = "ce"


@register_attack("apgd-dlr")
@dataclass(frozen=True, kw_only=True)
class APGDDLR(_APGD):
    """APGD on the untargeted DLR loss. Croce & Hein, arXiv 2003.01690.

    DLR = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), pi the logits sorted descending: invariant to
    shifting and scaling the logits; it needs at least 3 classes. AutoAttack's "plus" and "rand"
    versions use it. As the reference's check does, samples with an all-zero gradient at the start
    are reported as a warning (gradient masking). Defaults as `apgd-ce` (the reference's).

    Reproduces: robust accuracy within a point of the `fra31/auto-attack` snapshot's APGD-DLR on the
    same images and seed (`benchmarks/evasion_peers.py`).
    """

    loss_kind = "dlr"


@register_attack("apgd-t")
@dataclass(frozen=True, kw_only=True)
class APGDT(_APGD):
    """APGD-T: APGD on the targeted DLR loss over the top classes. Croce & Hein, arXiv 2003.01690.

    For r = 2 .. n_target_classes + 1, on the samples still robust, the target is the class of the
    r-th largest clean logit and one APGD run per restart ascends the targeted DLR loss
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) (at least 4 classes). Success is any
    misclassification, so the threat model is untargeted: the attack picks its own targets. A model
    with fewer than n_target_classes + 1 classes gets every other class once, and a warning.

    The second stage of AutoAttack "standard": 9 targets, 1 restart, 100 iterations each (the
    reference's defaults and "standard"'s settings).

    Reproduces: as the second stage of AutoAttack, the README's Madry MNIST (eps = 0.3) robust accuracy
    of 88.50%; the CPU check compares with the `fra31/auto-attack` snapshot on the same images and seed
    (`benchmarks/evasion_peers.py`).
    """

    targeted_ok = False
    loss_kind = "dlr-targeted"

    n_target_classes: int = param(9, ge=1, help="targets: the classes of the 2nd .. (n+1)-th largest clean logits")

    def _target_ranks(self, num_classes: int, ctx: RunContext) -> list[int | None]:
        n_targets = min(self.n_target_classes, num_classes - 1)
        if n_targets < self.n_target_classes:
            ctx.warnings.append(
                f"{self.name}: n_target_classes={self.n_target_classes} but the model has {num_classes} classes; "
                f"tried the {n_targets} other classes"
            )
        return [rank for rank in range(2, n_targets + 2) for _ in range(self.n_restarts)]
