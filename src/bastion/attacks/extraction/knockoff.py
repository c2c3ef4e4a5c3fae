"""`knockoff`: Knockoff Nets (Orekondy, Schiele, Fritz, CVPR 2019, arXiv 1812.02766)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.extraction.base import ExtractionAttack, ExtractionContext, soft_cross_entropy
from bastion.core.errors import DataError
from bastion.core.params import param

__all__ = ["Knockoff"]


@register_attack("knockoff")
@dataclass(frozen=True, kw_only=True)
class Knockoff(ExtractionAttack):
    """Knockoff Nets: query the API on images of another distribution and train a surrogate on the answers.

    Orekondy, Schiele, Fritz, "Knockoff Nets: Stealing Functionality of Black-Box Models", CVPR 2019,
    arXiv 1812.02766; reference `tribhuvanesh/knockoffnets` (`knockoff/adversary/transfer.py`,
    `knockoff/adversary/train.py`, `knockoff/utils/model.py`).

    `policy="random"`: `budget` images drawn without replacement from the pool (`transfer.py`'s
    `RandomAdversary`). `policy="adaptive"`: the paper's policy-gradient selection over the pool's
    classes (section 4.1.2; the released `adaptive.py` samples uniformly, so there is no runnable
    reference): a gradient bandit `pi = softmax(H)` over classes; each step samples a class, an unused
    image of it, queries it, scores the answer and takes one SGD step (lr 0.01, momentum 0.5, the
    reference's optimiser) of an online knockoff on it; the reward is the sum of the enabled terms, each
    standardised by the mean and standard deviation of its values so far: certainty (the answer's top-1
    minus top-2 probability), diversity (`sum_k max(0, y_k - mean of the last `window` answers_k)`) and
    loss (the cross-entropy between the answer and the online knockoff's prediction, before its step);
    then `H_z += alpha (r - r_bar)(1 - pi_z)` for the sampled class and `H_z' -= alpha (r - r_bar) pi_z'`
    for the others, `r_bar` the mean reward so far. A class whose images are used up leaves the policy.

    Either way the surrogate is then trained from fresh weights on the transfer set, with the soft
    cross-entropy `-sum_k p_k log softmax(F(x))_k` of the API's answers (one-hot labels for a label-only
    API; top-k: the k values, zeros elsewhere, not renormalised, as the reference trains). The curve
    trains fresh surrogates on the first B/c, 2B/c, ..., B queries (`curve_points` = c).

    Defaults: the reference trains with SGD lr 0.01, momentum 0.5, batch 64, lr x0.1 every 60 epochs,
    100 epochs from an ImageNet-pretrained model; bastion trains the victim's architecture from scratch
    with Adam (lr 3e-3, one-cycle) for 30 epochs, which reaches the same fidelity on `mnist5k` in a
    fraction of the steps. Measured (tests/attacks/extraction/test_knockoff.py, `mnist5k` standard
    `small_cnn`, pool = scikit-learn's 8x8 digits upsampled to 28x28): see docs/extraction.md and
    benchmarks/extraction_art.py. Paper: Caltech256 victim 78.4%, knockoff 76.0% (random, 60k queries).
    """

    needs_pool_labels: ClassVar[bool] = False

    policy: Literal["random", "adaptive"] = param("random", help="random: uniform; adaptive: the paper's bandit")
    curve_points: int = param(4, ge=1, help="fresh surrogates trained on growing prefixes of the queries")
    alpha: float = param(0.1, gt=0, help="adaptive: the policy's learning rate")
    window: int = param(25, ge=1, help="adaptive: answers the diversity reward compares with")
    rewards: Literal["all", "cert", "div", "loss"] = param("all", help="adaptive: the reward terms used")

    def _extract(self, ctx: ExtractionContext, x_pool: Tensor, y_pool: Tensor | None) -> nn.Module:
        if self.policy == "adaptive":
            if y_pool is None:
                raise DataError("knockoff policy=adaptive samples the pool by class: pass its labels (y_pool)")
            x, targets = self._adaptive(ctx, x_pool, y_pool)
        else:
            order = torch.randperm(x_pool.shape[0], generator=ctx.gen)[: self.budget].to(x_pool.device)
            x = x_pool[order]
            targets = ctx.targets(ctx.ask(x))
        m = x.shape[0]
        sizes = sorted({max(1, round(m * i / self.curve_points)) for i in range(1, self.curve_points + 1)})
        model: nn.Module | None = None
        for size in sizes:
            model = self.train(ctx.build(), x[:size], targets[:size])
            point = ctx.record(model)
            ctx.curve[-1] = point._replace(queries=size)  # the surrogate saw the first `size` answers
        assert model is not None
        return model

    def _adaptive(self, ctx: ExtractionContext, x_pool: Tensor, y_pool: Tensor) -> tuple[Tensor, Tensor]:
        classes, z_of = torch.unique(y_pool.cpu(), return_inverse=True)  # pool classes, (P,) class index
        nz = classes.numel()
        queue = [(z_of == z).nonzero().squeeze(1) for z in range(nz)]
        queue = [q[torch.randperm(q.numel(), generator=ctx.gen)] for q in queue]  # unused images, shuffled
        used = [0] * nz
        h = torch.zeros(nz, dtype=torch.float64)
        online = ctx.build().train()
        opt = torch.optim.SGD(online.parameters(), lr=0.01, momentum=0.5)
        terms = ("cert", "div", "loss") if self.rewards == "all" else (self.rewards,)
        history: dict[str, list[float]] = {t: [] for t in terms}
        total: list[float] = []
        recent: list[Tensor] = []
        picked: list[int] = []
        answers: list[Tensor] = []
        steps = min(self.budget, x_pool.shape[0])
        for _ in range(steps):
            alive = torch.tensor([used[z] < queue[z].numel() for z in range(nz)])
            pi = torch.softmax(h.masked_fill(~alive, -torch.inf), dim=0)
            z = int(torch.multinomial(pi, 1, generator=ctx.gen))
            i = int(queue[z][used[z]])
            used[z] += 1
            picked.append(i)
            x = x_pool[i : i + 1]
            y = ctx.targets(ctx.ask(x))  # (1, K)
            answers.append(y)
            online.train()
            loss = soft_cross_entropy(online, x, y)
            raw = {
                "cert": float(y.topk(2, dim=1).values.diff(dim=1).neg()) if y.shape[1] > 1 else 1.0,
                "div": float((y[0] - torch.stack(recent).mean(0)).clamp(min=0).sum()) if recent else 1.0,
                "loss": float(loss.detach()),
            }
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            recent = [*recent[-(self.window - 1) :], y[0].detach()] if self.window > 1 else [y[0].detach()]
            r = 0.0
            for t in terms:
                history[t].append(raw[t])
                v = torch.tensor(history[t], dtype=torch.float64)
                r += 0.0 if v.numel() < 2 else float((v[-1] - v.mean()) / (v.std() + 1e-8))
            total.append(r)
            r_bar = sum(total) / len(total)
            step = self.alpha * (r - r_bar)
            grad = -step * pi  # the others: H_z' -= alpha (r - r_bar) pi_z'
            grad[z] = step * (1 - pi[z])
            h = h + grad.masked_fill(~alive, 0.0)
        online.eval()
        idx = torch.tensor(picked, dtype=torch.long, device=x_pool.device)
        counts = torch.bincount(z_of[idx.cpu()], minlength=nz)
        ctx.extra.update(
            policy=torch.softmax(h, dim=0).tolist(),
            pool_classes=classes.tolist(),
            picked_per_class=counts.tolist(),
        )
        # the transfer set in query order: the answers were paid for once, step by step
        return x_pool[idx], torch.cat(answers)
