"""Dataset inference's distance features (Maini, Yaghini, Papernot, ICLR 2021; reference
cleverhans-lab/dataset-inference `src/attacks.py`, `rand_steps` and `mingd`).

Both return distances (N, 3, D) in the norms L-inf, L2, L1 (in that order) and the cost per point.

- `blind_walk` (label-only): per point and norm, D random directions u (L-inf: U(-0.005, 0.005) per
  pixel; L2: N(0, 0.005^2); L1: Laplace with scale 0.01; all times `scale`); the suspect is asked
  for its label of clip(x + m u, 0, 1) for m = 1, 2, ..., `max_steps` until the label differs from the
  true label y, and the feature is the p-norm of the clipped step that changed it. A point the model
  already misclassifies stops at m = 1 (ref); a walk that never changes the label takes the value at
  m = max_steps + 1 (ref: the reference scales the direction once more after its last query). Every
  query goes through a label-only `Oracle`, counted per point (at most 3 D max_steps).
- `mingd` (white-box): per point, norm and target class t (all K, the true class included: it costs
  nothing and gives 0, as in the reference), ascend z_t - max_j z_j from delta = 0 by `alpha sign g`
  (L-inf, 0.001), `alpha g / |g|_2` (L2, 0.01) or a step of 1/k on the k = 100 largest gradient
  coordinates that can still move (L1), clipping x + delta to [0, 1], until the model predicts t or
  `max_steps` (500) steps; the feature is |delta|_p. Cost: gradient steps per point.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.core.ops import batch_slices
from bastion.core.victim import Victim

__all__ = ["NORMS", "blind_walk", "mingd", "sort_features"]

NORMS = ("linf", "l2", "l1")
_NOISE = {"linf": 0.005, "l2": 0.005, "l1": 0.01}  # the reference's U(+-a), N(0, s^2), Laplace(b)
_ALPHA = {"linf": 0.001, "l2": 0.01}
_L1_K = 100


def _norm(delta: Tensor, norm: str) -> Tensor:
    flat = delta.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2 if norm == "l2" else 1, dim=1)


def _direction(norm: str, shape: tuple[int, ...], scale: float, gen: torch.Generator) -> Tensor:
    a = _NOISE[norm] * scale
    if norm == "linf":
        return (torch.rand(shape, generator=gen) * 2 - 1) * a
    if norm == "l2":
        return torch.randn(shape, generator=gen) * a
    v = torch.rand(shape, generator=gen) - 0.5  # Laplace by the inverse CDF
    return -a * v.sign() * torch.log1p(-2 * v.abs().clamp(max=0.5 - 1e-12))


def blind_walk(
    victim: Victim, x: Tensor, y: Tensor, *, directions: int, max_steps: int, scale: float, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Blind Walk distances (N, 3, D) and label queries per point (N,), all through a label-only oracle."""
    n = x.shape[0]
    oracle = victim.oracle(n, output="label", max_queries=len(NORMS) * directions * max_steps)
    lo, hi = victim.bounds
    x, y = x.to(victim.device), y.to(victim.device)
    feats = torch.zeros(n, len(NORMS), directions)
    point = torch.arange(n, device=victim.device).repeat_interleave(directions)  # (N D,) the point of each walk
    for j, norm in enumerate(NORMS):
        u = _direction(norm, (n * directions, *x.shape[1:]), scale, gen).to(victim.device)  # (N D, C, H, W)
        stop = torch.full((n * directions,), max_steps + 1, device=victim.device)
        active = torch.ones(n * directions, dtype=torch.bool, device=victim.device)
        for m in range(1, max_steps + 1):
            walk = torch.nonzero(active).flatten()
            if walk.numel() == 0:
                break
            x_q = (x[point[walk]] + m * u[walk]).clamp(lo, hi)
            changed = oracle.query(x_q, idx=point[walk]) != y[point[walk]]
            stop[walk[changed]] = m
            active[walk[changed]] = False
        dist = torch.cat(
            [
                _norm((x[point[s]] + stop[s].view(-1, 1, 1, 1) * u[s]).clamp(lo, hi) - x[point[s]], norm)
                for s in batch_slices(n * directions, 4096)
            ]
        )
        feats[:, j] = dist.view(n, directions).cpu()
    return feats, oracle.queries.cpu()


def _l1_step(grad: Tensor, x_adv: Tensor, lo: float, hi: float) -> Tensor:
    """A unit L1 step spread over the k largest gradient coordinates that can still move their way."""
    flat = grad.flatten(1)
    movable = ((flat > 0) & (x_adv.flatten(1) < hi)) | ((flat < 0) & (x_adv.flatten(1) > lo))
    score = flat.abs().masked_fill(~movable, -1.0)
    k = min(_L1_K, flat.shape[1])
    top = score.topk(k, dim=1).indices
    e = torch.zeros_like(flat)
    e.scatter_(1, top, flat.gather(1, top).sign())
    return (e / k).view_as(grad)


def mingd(victim: Victim, x: Tensor, y: Tensor, *, max_steps: int) -> tuple[Tensor, Tensor]:
    """MinGD distances (N, 3, K), one per target class, and gradient steps per point (N,) (white-box)."""
    n, k = x.shape[0], victim.num_classes
    lo, hi = victim.bounds
    x = x.to(victim.device)
    feats = torch.zeros(n, len(NORMS), k)
    steps = torch.zeros(n, dtype=torch.long)
    point = torch.arange(n).repeat_interleave(k)  # (N K,)
    target = torch.arange(k).repeat(n).to(victim.device)
    for j, norm in enumerate(NORMS):
        x0 = x[point.to(victim.device)]
        x_adv = x0.clone()
        active = victim.predict(x_adv) != target
        for _ in range(max_steps):
            walk = torch.nonzero(active).flatten()
            if walk.numel() == 0:
                break
            steps += torch.bincount(point[walk.cpu()], minlength=n)
            for s in batch_slices(walk.numel(), victim.batch_size):
                w = walk[s]
                xa = x_adv[w].clone().requires_grad_(True)
                z = victim(xa)
                gain = (z.gather(1, target[w].unsqueeze(1)).squeeze(1) - z.max(dim=1).values).sum()
                (g,) = torch.autograd.grad(gain, xa)
                if norm == "linf":
                    step = _ALPHA["linf"] * g.sign()
                elif norm == "l2":
                    step = _ALPHA["l2"] * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                else:
                    step = _l1_step(g, xa.detach(), lo, hi)
                x_adv[w] = (xa.detach() + step).clamp(lo, hi)
            active[walk] = victim.predict(x_adv[walk]) != target[walk]
        feats[:, j] = _norm(x_adv - x0, norm).view(n, k).cpu()
    return feats, steps


def sort_features(feats: Tensor) -> Tensor:
    """Each norm's D values in ascending order (ref): the directions, or targets, become exchangeable."""
    return feats.sort(dim=2).values
