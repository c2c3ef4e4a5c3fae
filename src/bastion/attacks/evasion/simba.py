"""`simba`: the Simple Black-box Attack, a coordinate search along a pixel or low-frequency DCT basis (L2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.evasion._active import Retire, State
from bastion.attacks.evasion._losses import misclassified
from bastion.attacks.evasion.base import EvasionAttack, RunContext
from bastion.core.ops import dct_matrix, project
from bastion.core.oracle import Oracle, OutputMode
from bastion.core.params import param
from bastion.core.progress import report
from bastion.core.threat import Access, Norm

__all__ = ["SimBA", "basis_order"]

_PROGRESS_EVERY = 100
_UNBOUNDED = (-math.inf, math.inf)


def basis_order(
    m: int,
    shape: tuple[int, int, int],
    basis: Literal["dct", "pixel"],
    order: Literal["rand", "strided"],
    freq_dims: int,
    stride: int,
    gen: torch.Generator,
) -> Tensor:
    """Per sample, the basis directions of one pass in the order SimBA tries them (M, K), as flat indices
    into (C, H, W): pixels, or DCT coefficients (channel, row frequency, column frequency).

    pixel: every pixel, in random order. dct `rand`: the lowest `freq_dims x freq_dims` frequencies of each
    channel, in random order. dct `strided`: that block first, then bands of `stride` further frequencies
    (`max(u - f, v - f)` in `[b * stride, (b + 1) * stride)` for band b + 1), each band in random order.
    """
    c, h, w = shape
    noise = torch.rand((m, c * h * w), generator=gen, device=gen.device)  # random order within a band
    if basis == "pixel":
        return noise.argsort(1)
    fh, fw = min(freq_dims, h), min(freq_dims, w)
    u = torch.arange(h, device=gen.device)[:, None] - fh
    v = torch.arange(w, device=gen.device)[None, :] - fw
    outside = torch.maximum(u, v)  # < 0 inside the low-frequency block
    band = torch.where(outside < 0, 0, outside // stride + 1).float()
    if order == "rand":
        band = torch.where(outside < 0, 0.0, math.inf)  # only the block
    keys = band.expand(c, h, w).reshape(1, -1) + noise
    k = c * fh * fw if order == "rand" else c * h * w
    return keys.argsort(1)[:, :k]


@register_attack("simba")
@dataclass(frozen=True, kw_only=True)
class SimBA(EvasionAttack):
    """SimBA and SimBA-DCT. Guo, Gardner, You, Wilson, Weinberger, "Simple Black-box Adversarial Attacks",
    ICML 2019, arXiv 1905.07121; reference cg563/simple-blackbox-attack (`simba.py`, `run_simba.py`).

    Iteration k takes the next direction q of an orthonormal basis (a pixel, or a low-frequency 2-D DCT
    cosine of one channel), queries `x - epsilon q`, keeps it if the oracle's probability of the true
    class falls (targeted: of the target rises), and otherwise queries `x + epsilon q` and keeps that if
    it does. The oracle answers probabilities. Directions come in a per-sample random order (`basis_order`):
    every pixel, or the lowest `freq_dims x freq_dims` DCT frequencies (`order="rand"`), or those then
    bands of `stride` higher frequencies (`order="strided"`, the paper's ImageNet DCT runs). As in the
    reference, the state is the unclipped perturbation and the image is `clip(x + delta)`.

    Passes: the attack makes one pass over its basis and stops, as the reference does (`run_simba.py` runs
    `min(basis size, num_iters)` iterations; Algorithm 1 of the paper picks directions without
    replacement). `passes=2` (or more) is bastion's option: when a pass ends with the sample not fooled, a
    new pass starts over the same directions in a fresh order, from the perturbation reached.

    Threat model: L2, the paper's measure. A candidate perturbation longer than eps is scaled back onto
    the ball (the basis is orthonormal, so this is the projection of the coefficients too); the paper
    runs unconstrained and reports the L2 norm it reached.

    Queries: the clean image is query 1 of each sample (its probability is the starting point); each
    iteration costs 1 or 2. Success is read from the answers paid for: a probe that fools the model is
    kept (even without improving the probability) and the sample stops there. The reference's batched
    loop pays neither for its per-iteration prediction nor for the `x + epsilon q` probe of samples whose
    first probe improved (and accepts it when better still); neither is done here. A sample never fooled
    stops after its passes, having spent between `1 + passes * K` and `1 + 2 * passes * K` queries for a
    basis of K directions, or earlier when its budget (`n_queries` or the oracle's, whichever is smaller)
    runs out.

    Defaults (run_simba.py): `basis="dct"`, `order="rand"`, `freq_dims=14` (capped at the image size),
    `stride=7`, `epsilon=0.2`; the paper's ImageNet runs use 10,000 iterations, DCT with `freq_dims=28`
    strided by 7, pixel over all 224 x 224 frequencies. `n_queries=10,000`, `passes=1`. With the default
    basis a pass has `3 x 14 x 14 = 588` directions on colour images (196 on grayscale), so the budget
    binds only for the larger bases (pixel, strided DCT).

    Numbers: the paper (arXiv 1905.07121), ImageNet ResNet-50 untargeted, about 98.6% success with about
    1.3k (DCT) and 1.7k (pixel) mean queries (approximate, not re-checked against its tables). Measured on
    CPU (`benchmarks/score_baselines.py`, `small_cnn` on `mnist5k`, 40 correctly classified test images,
    L2 eps 2.0, defaults): success 0.30 /
    0.50 / 0.65 at 250 / 500 / 1,000 queries (pixel basis 0.00 / 0.20 / 0.40; Square with its defaults
    0.50 / 0.60 / 0.62; random noise 0.00).
    """

    access: ClassVar[Access] = "scores"
    oracle_output: ClassVar[OutputMode] = "probs"
    norms: ClassVar[tuple[Norm, ...]] = ("l2",)
    targeted_ok: ClassVar[bool] = True

    n_queries: int = param(10_000, ge=1, help="queries per sample, the clean image's included")
    epsilon: float = param(0.2, gt=0, help="L2 length of each step along a basis direction")
    basis: Literal["dct", "pixel"] = param("dct", help="search directions: low-frequency DCT or pixels")
    order: Literal["rand", "strided"] = param("rand", help="DCT only: the low block (rand) or all, by bands")
    freq_dims: int = param(14, ge=1, help="DCT only: side of the low-frequency block tried first")
    stride: int = param(7, ge=1, help="DCT strided order: width of each further band of frequencies")
    passes: int = param(1, ge=1, help="passes over the basis, each in a fresh order (the reference: 1)")

    def _perturb(self, oracle: Oracle, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        n, shape, gen = x.shape[0], (x.shape[1], x.shape[2], x.shape[3]), ctx.gen
        budget = oracle.budget(self.n_queries)
        x_adv = x.clone()
        # a leaving sample's result: the clean image plus its perturbation, clipped (the reference's image)
        retire = Retire(x_adv, lambda s: (s["x"] + s["delta"]).clamp(*oracle.bounds), oracle, ctx.trace)
        st: State = {"ids": torch.arange(n, device=x.device), "x": x, "y": y}
        if ctx.target_labels is not None:
            st["t"] = ctx.target_labels
        st["delta"] = torch.zeros_like(x)
        st = retire.spent(st, 1, self.n_queries)
        probs = oracle.query(st["x"], st["ids"])
        st["loss"] = self._loss(probs, st)
        st = retire.fooled(st, misclassified(probs, st["y"], st.get("t")))
        orders = basis_order(n, shape, self.basis, self.order, self.freq_dims, self.stride, gen).to(x.device)
        size = orders.shape[1]  # K: directions per pass
        total = min(budget, 1 + 2 * self.passes * size)  # the most a sample can spend
        iters = 0
        for k in range(self.passes * size):
            st = retire.spent(st, 1, self.n_queries)
            if not st["ids"].numel():
                break
            if k and k % size == 0:  # a further pass, in a fresh order per sample
                orders = basis_order(n, shape, self.basis, self.order, self.freq_dims, self.stride, gen).to(x.device)
            st["q"] = self._direction(orders[st["ids"], k % size], shape)  # (M, C, H, W), unit L2
            st = self._try(oracle, st, -1.0, retire, first=True)
            st = self._try(oracle, st, 1.0, retire, first=False)
            iters = k + 1
            if iters % _PROGRESS_EVERY == 0:  # in queries: an iteration costs 1 or 2
                report(ctx.progress, self.name, int(oracle.queries.max()), total)
        # the samples still here ran out of directions unfooled: their current images are their results
        x_adv[st["ids"]] = (st["x"] + st["delta"]).clamp(*oracle.bounds)
        if iters % _PROGRESS_EVERY:  # the end, whatever ended the loop, unless just reported
            report(ctx.progress, self.name, int(oracle.queries.max()), total)
        return x_adv

    def _loss(self, probs: Tensor, st: State) -> Tensor:
        """The probability to push down (M,): of the true class, or minus that of the target."""
        if "t" in st:
            return -probs.gather(1, st["t"][:, None]).squeeze(1)
        return probs.gather(1, st["y"][:, None]).squeeze(1)

    def _try(self, oracle: Oracle, st: State, sign: float, retire: Retire, *, first: bool) -> State:
        """Probe `delta + sign * epsilon * q` for the samples still trying direction q; keep improvements."""
        tries = oracle.remaining(st["ids"], cap=self.n_queries) >= 1
        if not first:  # the second probe only for the samples the first did not move
            tries &= ~st.pop("moved")
        if bool(tries.any()):
            cand = st["delta"][tries] + sign * self.epsilon * st["q"][tries]
            cand = project(cand, torch.zeros_like(cand), "l2", self.threat.eps, _UNBOUNDED)  # unclipped, in the ball
            x_new = (st["x"][tries] + cand).clamp(*oracle.bounds)
            probs = oracle.query(x_new, st["ids"][tries])
            sub = {k: v[tries] for k, v in st.items() if k in ("y", "t")}
            loss, fooled = self._loss(probs, sub), misclassified(probs, sub["y"], sub.get("t"))
            keep = (loss < st["loss"][tries]) | fooled
            rows = tries.nonzero().squeeze(1)[keep]
            st["delta"][rows], st["loss"][rows] = cand[keep], loss[keep]
            moved = torch.zeros_like(tries)
            moved[rows] = True
            done = torch.zeros_like(tries)
            done[tries.nonzero().squeeze(1)[fooled]] = True
        else:
            moved = done = torch.zeros_like(tries)
        if first:
            st["moved"] = moved
        return retire.fooled(st, done)

    def _direction(self, j: Tensor, shape: tuple[int, int, int]) -> Tensor:
        """The unit basis images (M, C, H, W) of the flat indices `j` (M,) into (C, H, W)."""
        c, h, w = shape
        m = j.shape[0]
        if self.basis == "pixel":
            return torch.zeros(m, c * h * w, device=j.device).scatter_(1, j[:, None], 1.0).view(m, c, h, w)
        ch, u, v = j // (h * w), (j // w) % h, j % w
        dh, dw = dct_matrix(h, j.device), dct_matrix(w, j.device)
        plane = dh[u][:, :, None] * dw[v][:, None, :]  # (M, H, W): the inverse DCT of one coefficient
        onehot = torch.zeros(m, c, 1, 1, device=j.device).scatter_(1, ch.view(m, 1, 1, 1), 1.0)
        return onehot * plane[:, None]
