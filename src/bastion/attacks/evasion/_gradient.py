"""What the white-box attacks share: one forward+backward for logits, per-sample loss and input gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bastion.core.victim import Victim

__all__ = ["loss_and_grad", "normalize_l2", "random_start"]


def loss_and_grad(victim: Victim, x: Tensor, loss_fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(logits (N, K), loss (N,), grad of the summed loss w.r.t. x (N, C, H, W)), all detached.

    Samples are independent (eval mode), so the gradient of the sum is each sample's own gradient.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = victim(x)
        loss = loss_fn(logits)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), grad.detach()


def normalize_l2(g: Tensor) -> Tensor:
    """g / ||g||_2 per sample; a zero gradient stays zero (no move)."""
    n = g.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (g.dim() - 1)))
    return g / (n + 1e-12)


def random_start(x: Tensor, norm: str, eps: float, gen: torch.Generator) -> Tensor:
    """A uniform draw from the L-inf ball, or from the L2 ball (direction Gaussian, radius eps * U^(1/d))."""
    if norm == "linf":
        return x + (2 * torch.rand(x.shape, generator=gen, device=gen.device) - 1).to(x.device) * eps
    u = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
    d = x[0].numel()
    r = torch.rand(x.shape[0], generator=gen, device=gen.device).to(x.device) ** (1.0 / d)
    return x + normalize_l2(u) * (eps * r).view(-1, *([1] * (x.dim() - 1)))
