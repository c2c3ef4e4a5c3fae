"""`aaa`: Adversarial Attack on Attackers, served logits whose margin misleads score-based query attacks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from bastion.core.calibration import ece_stack, temperature_grid
from bastion.core.params import param
from bastion.defenses.postprocess.base import PostProcess, keep_label, register_postprocess

__all__ = ["AAA"]

# torch.optim.Adam's defaults, which the reference uses (only the learning rate is set)
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_GRID_CHUNK = 16  # temperatures served per batched pass of `AAA.calibrated`


@register_postprocess("aaa")
@dataclass(frozen=True, kw_only=True)
class AAA(PostProcess):
    """AAA: post-process the logits so that score-based query attacks walk away from the boundary.

    Chen, Jiang, Wu, Yang, Zhao, Zha, Huang, "Adversarial Attack on Attackers: Post-Process to Mitigate
    Black-Box Score-Based Query Attacks", NeurIPS 2022, arXiv 2205.12134; reference `Sizhe-Chen/AAA`
    (`victim.py`, classes `AAALinear` and `AAASine`).

    A score-based attack (Square, SimBA, NES, ...) keeps a candidate when the margin
    `z_top1 - z_top2` it is served falls. AAA cuts the margin axis into intervals of width `interval`;
    each interval's midpoint is an attractor `a`, and the served margin is the true one reflected
    about it, `m* = a - reverse_step * (m - a)` (`curve="linear"`; `"sine"`:
    `m* = m - 0.7 * interval * sin(pi * (1 - 2 (m - a) / interval))`). Inside an interval, moving
    towards the boundary therefore looks like moving away from it, and the greedy search climbs
    back towards the attractor. Per query batch, starting from the model's logits, `steps` Adam steps
    (learning rate `lr`) minimise, per sample,
    `|top1(z) - top2(z) - m*| + calibration_weight * |softmax(z)[c] - p*|`, where `c` is the model's
    prediction and `p* = max softmax(logits / temperature)`: the margin follows the deceiving curve
    while the confidence stays (T = 1) or becomes calibrated (a fitted T). The gradient and the
    Adam update are written out in closed form (the same numbers as autograd + `torch.optim.Adam`;
    `tests/defenses/test_postprocess.py` checks it), with the loss summed over the batch where the
    reference takes its mean: Adam is invariant to that scale, and a sample's served logits do not
    depend on the other rows of its query. A sample whose argmax would move after the steps is served
    instead the model's logits with the top entry set to `top2 + m*` (a closed form with the exact
    target margin; `m* > 0`, so the label stays). The served argmax always equals the model's
    (asserted); AAA is deterministic and costs no queries.

    Not a white-box defense: the label is the model's, so an adversarial example crafted with the
    model's gradients (PGD) fools the defended API exactly as often as the bare model.

    Defaults: `interval = 6`, `reverse_step = 1`, `calibration_weight = 5`, `steps = 100`, `lr = 0.1`,
    the reference's command-line defaults (`square.py`; `AAALinear`'s own constructor default
    interval is 4, which the scripts never use). `reverse_step` is capped at 1: beyond, `m*` can be
    negative in the first interval and the label would flip. The temperature: as released, the
    reference holds a table of tuned temperatures but applies none (T = 1, confidence preserved);
    T is a parameter, and `AAA.calibrated(logits, y)` fits it on held-out logits the way the reference's
    `temperature_rescaling_with_aaa` does: a grid of t and 1/t searched for the lowest 15-bin ECE of
    AAA's own served scores (`bastion.core.calibration.fit_temperature` is plain temperature scaling).
    The reference's harness also floors inputs to the 1/255 grid; that belongs to the attack set-up,
    not to this filter.

    Numbers: the paper reports 80.59% robust accuracy for the RobustBench `Standard` WRN-28-10 on
    CIFAR-10 under Square (L-inf 8/255, 2,500 queries), clean accuracy unchanged. Measured by
    `benchmarks/defenses.py` on `small_cnn` / `mnist5k` (first 200 test images, L-inf 0.3, Square
    with p_init 0.8 and 1,000 queries; docs/defenses.md): labels identical to the model's on all
    1,000 test images; Square robust accuracy 0.0% undefended, 49.5% through AAA (`standard` model)
    and 71.0% (an over-confident model); PGD-40 0.0% either way. Calibration does not improve there:
    15-bin ECE with the temperature cross-fitted through AAA 3.39% against 0.49% undefended on the
    well-calibrated `standard` model, 1.59% against 1.58% on the over-confident one. The served
    confidence is bounded by the served margin, so an image served a margin far from its own gets a
    confidence no temperature can undo; the paper's gain needs a model whose own miscalibration is
    larger than that distortion.
    """

    keeps_label: ClassVar[bool] = True

    interval: float = param(6.0, gt=0, help="width of the margin intervals; their midpoints are the attractors")
    reverse_step: float = param(1.0, gt=0, le=1, help="how far the served margin is reflected about the attractor")
    calibration_weight: float = param(5.0, ge=0, help="weight of the confidence term of the loss")
    steps: int = param(100, ge=0, help="Adam steps on the logits per query batch")
    lr: float = param(0.1, gt=0, help="Adam learning rate")
    temperature: float = param(1.0, gt=0, help="served confidence = max softmax(logits / temperature)")
    curve: Literal["linear", "sine"] = param("linear", help="deceiving curve: linear (AAALinear) or sine (AAASine)")

    @classmethod
    def calibrated(cls, logits: Tensor, y: Tensor, *, step: float = 0.01, **params: Any) -> AAA:
        """An `AAA` whose temperature minimises the 15-bin ECE of its own served scores on held-out (logits, y).

        The reference's `temperature_rescaling_with_aaa`: the temperatures of
        `bastion.core.calibration.temperature_grid(step)` (t and 1/t; the reference steps by 0.001,
        ten times the cost for a difference in the third decimal of T) are tried through AAA itself,
        all in one batched pass, and the first with the lowest ECE is kept.

        Args:
            logits: the model's logits (N, K) on held-out images (neither trained on nor evaluated on).
            y: their labels (N,).
            step: the grid step.
            **params: the other hyperparameters.
        """
        base = cls(**params)
        z0 = logits.detach().float()
        y = y.to(z0.device)
        best, best_ece = 1.0, math.inf
        for temps in temperature_grid(step).split(_GRID_CHUNK):
            g, (n, k) = temps.numel(), z0.shape
            p_star = (z0[None] / temps.to(z0)[:, None, None]).softmax(dim=2).amax(dim=2)  # (G, N)
            served = base._serve(z0.repeat(g, 1), p_star.reshape(-1)).view(g, n, k)
            errors = ece_stack(served.double().softmax(dim=2), y)
            i = int(errors.argmin())
            if float(errors[i]) < best_ece:
                best, best_ece = float(temps[i]), float(errors[i])
        return cls(**{**params, "temperature": best})

    def target_margin(self, margin: Tensor) -> Tensor:
        """The margin (N,) served for a true margin (N,) >= 0: its reflection about its interval's attractor."""
        tau = self.interval
        attractor = tau * (torch.floor(margin / tau) + 0.5)
        if self.curve == "linear":
            return attractor - self.reverse_step * (margin - attractor)
        return margin - 0.7 * tau * torch.sin(math.pi * (1 - 2 * (margin - attractor) / tau))

    def _apply(self, logits: Tensor, x: Tensor) -> Tensor:
        z0 = logits.detach().float()  # (N, K)
        p_star = (z0 / self.temperature).softmax(dim=1).amax(dim=1)  # (N,)
        return self._serve(z0, p_star).to(logits.dtype)

    def _serve(self, z0: Tensor, p_star: Tensor) -> Tensor:
        """Served logits (N, K) for the model's logits z0 (N, K) and target confidences p_star (N,)."""
        rows = torch.arange(z0.shape[0], device=z0.device)
        label = z0.argmax(dim=1)  # (N,) the model's prediction, kept
        second = z0.scatter(1, label[:, None], -torch.inf).amax(dim=1)
        target = self.target_margin(z0[rows, label] - second)  # (N,)
        z = self._optimise(z0, label, target, p_star)
        moved = z.argmax(dim=1) != label
        if bool(moved.any()):  # closed form: the model's logits with the exact target margin
            fixed = z0[moved].clone()
            fixed[rows[: int(moved.sum())], label[moved]] = second[moved] + target[moved]
            z[moved] = fixed
        return keep_label(z, label)  # only acts where the margin rounds to 0 in float

    def _optimise(self, z0: Tensor, label: Tensor, target: Tensor, p_star: Tensor) -> Tensor:
        """`steps` Adam steps on z from z0 for the loss summed over rows (see the class docstring)."""
        z = z0.clone()
        mom, vel = torch.zeros_like(z), torch.zeros_like(z)
        for t in range(1, self.steps + 1):
            top = z.topk(2, dim=1)  # the gradient of the margin goes to the current top-2 entries
            side = torch.sign(top.values[:, 0] - top.values[:, 1] - target)  # d|margin - m*| / d margin
            p = z.softmax(dim=1)
            pc = p.gather(1, label[:, None])  # (N, 1)
            w = self.calibration_weight * torch.sign(pc - p_star[:, None]) * pc  # d|p_c - p*| / dz = w (e_c - p)
            grad = (-w * p).scatter_add_(
                1, torch.cat([top.indices, label[:, None]], dim=1), torch.cat([side[:, None], -side[:, None], w], dim=1)
            )
            mom.lerp_(grad, 1 - _BETA1)
            vel.mul_(_BETA2).addcmul_(grad, grad, value=1 - _BETA2)
            denom = vel.sqrt().div_(math.sqrt(1 - _BETA2**t)).add_(_ADAM_EPS)
            z.addcdiv_(mom, denom, value=-self.lr / (1 - _BETA1**t))
        return z
