"""`softtrain-me`: split-learning extraction on own data with soft labels from gradients (Li et al., 2023).

Li et al., arXiv 2303.08581. Reference `zlijingtao/SFL-MEA` (`old-commit`)
`attacks/model_extraction_attack.py`, `SoftTrain_option` in `prepare_steal_attack` and `steal_attack`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.extraction._sfl_base import (
    Attacker,
    SplitExtractionAttack,
    augment,
    ce_epoch,
    soft_cross_entropy,
)
from bastion.core.errors import ConfigError
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report

__all__ = ["SoftTrainME", "soft_labels"]


def soft_labels(g: Tensor, y: Tensor, alpha: float) -> Tensor:
    """Soft labels (N, K) from the gradients g (N, K, *z_shape) of every label and the true labels y (N,):
    `s_c = cos(g_c, g_y) + 1`, `p_c = (1 - alpha) s_c / (sum_c s_c - 1)` for c != y (the sum includes
    `s_y = 2`, so p does not sum exactly to 1, as in the reference), `p_y = alpha`."""
    flat = g.flatten(2)  # (N, K, D)
    g_y = flat[torch.arange(flat.shape[0], device=flat.device), y]  # (N, D)
    s = F.cosine_similarity(flat, g_y[:, None, :], dim=2) + 1  # (N, K)
    p = (1 - alpha) * s / (s.sum(1, keepdim=True) - 1)
    return p.scatter(1, y[:, None], alpha)


@register_attack("softtrain-me")
@dataclass(frozen=True, kw_only=True)
class SoftTrainME(SplitExtractionAttack):
    """SoftTrain-ME: Train-ME plus soft labels derived from gradient cosines.

    The attacker passes over its own data (query batches of `query_batch`, fresh augmentation each
    pass) until the budget is spent; for each image it queries every label c and gets g_c; g_y is the
    row of the true label. Soft labels as `soft_labels` (alpha 0.9). Each epoch: an augmented, shuffled
    pass of CE on y, then an unaugmented in-order pass of `(1 - lam) CE(y) + lam softCE(p)` (lam 0.1) over
    the last `last_n_batch` batches (default 10,000: all of them).

    Query accounting: the reference sends K + 1 rows per image (the true label, then every c) but
    charges K; the true label's row is the row of c = y, so bastion sends K and counts K per image:
    the same soft labels from a fixed server, and an exact count. floor(B / K) images.
    """

    needs = "own"
    source = "the attacker's own labelled data, soft labels from gradient cosines"

    alpha: float = param(0.9, gt=0, lt=1, help="the true label's soft-label mass (reference: 0.9)")
    lam: float = param(0.1, ge=0, le=1, help="weight of the soft-label loss in the second pass (reference: 0.1)")
    last_n_batch: int = param(10000, ge=1, help="batches (the last ones, in order) of the soft-label pass")
    query_batch: int = param(100, ge=1, help="images per query batch (reference: 100)")

    def planned_queries(self, num_classes: int, n_own: int, n_aux: int) -> int:
        if self.budget < num_classes:
            raise ConfigError(
                f"softtrain-me queries every one of the {num_classes} labels per image; "
                f"budget {self.budget} is too small"
            )
        return (self.budget // num_classes) * num_classes

    def _collect(
        self, atk: Attacker, gen: torch.Generator, progress: ProgressFn | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        assert atk.x_own is not None and atk.y_own is not None
        k, n_img, n_own = atk.num_classes, self.budget // atk.num_classes, atk.x_own.shape[0]
        xs, ys, ps = [], [], []
        done = 0
        while done < n_img:
            order = torch.randperm(n_own, generator=gen).to(atk.device)
            for i in range(0, n_own, self.query_batch):
                idx = order[i : min(i + self.query_batch, i + n_img - done)]
                x, y = augment(atk.x_own[idx], gen, flip=self.flip), atk.y_own[idx]
                z = atk.z(x)
                g = torch.stack([atk.oracle.grad(z, torch.full_like(y, c)) for c in range(k)], 1)  # (b, K, *z)
                xs.append(x)
                ys.append(y)
                ps.append(soft_labels(g, y, self.alpha))
                done += idx.numel()
                report(progress, "softtrain-queries", atk.oracle.queries, n_img * k)
                if done >= n_img:
                    break
        return torch.cat(xs), torch.cat(ys), torch.cat(ps)

    def _epoch(
        self, surrogate: nn.Module, opt: torch.optim.Optimizer, atk: Attacker, data: object, gen: torch.Generator
    ) -> float:
        x, y, p = data  # type: ignore[misc]
        ce_epoch(surrogate, opt, atk, x, y, gen, batch_size=self.batch_size, flip=self.flip)
        starts = list(range(0, x.shape[0], self.batch_size))
        total, seen = 0.0, 0
        for s in starts[max(len(starts) - self.last_n_batch, 0) :]:
            xb, yb, pb = x[s : s + self.batch_size], y[s : s + self.batch_size], p[s : s + self.batch_size]
            out = surrogate(atk.z(xb))
            loss = (1 - self.lam) * F.cross_entropy(out, yb) + self.lam * soft_cross_entropy(out, pb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * yb.numel()
            seen += yb.numel()
        return total / max(seen, 1)
