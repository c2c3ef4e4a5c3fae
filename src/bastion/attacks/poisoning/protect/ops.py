"""`one-pixel-shortcut`: one pixel per class makes a training set unlearnable (Wu et al., ICLR 2023)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.base import register_attack
from bastion.attacks.poisoning.protect.base import DataProtection, ModelFactory
from bastion.core.errors import DataError
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report

__all__ = ["OnePixelShortcut", "corner_colours", "pixel_scores"]


def corner_colours(channels: int) -> Tensor:
    """The 2^C extreme colours {0, 1}^C (V, C), in lexicographic order: (0, 0, 0), (0, 0, 1), ..."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=channels)))


def pixel_scores(x: Tensor, colours: Tensor) -> Tensor:
    """The One-Pixel Shortcut search score of every (position, colour) pair for one class's images.

    For images `x` (n, C, H, W) and colour v (C,) at position (r, w), `D = |v - x[:, :, r, w]|` over the n
    images and C channels; the score is `mean(D) / std(D)` (population std): a pixel far from v in every
    image of the class, and consistently so, makes the most salient shortcut once set to v. Returns
    (H * W, V), position-major; a pair whose D is constant scores +inf when the mean is positive (every
    image sits at the far extreme) and -inf when it is zero (every image already has the colour).

    Computed from per-channel moments: with x in [0, 1] and v_c in {0, 1}, `|v_c - x|` is `x` or `1 - x`,
    so mean and second moment follow from E[x] and E[x^2] without materialising D (n C H W V values).
    """
    c = x.shape[1]
    flat = x.double().flatten(2)  # (n, C, P)
    m1 = flat.mean(dim=0)  # (C, P)
    m2 = (flat * flat).mean(dim=0)  # (C, P)
    v = colours.double().T[:, None, :]  # (C, 1, V)
    mean_c = torch.where(v > 0.5, 1 - m1[..., None], m1[..., None])  # (C, P, V): E|v_c - x|
    second_c = torch.where(v > 0.5, 1 - 2 * m1[..., None] + m2[..., None], m2[..., None])  # E|v_c - x|^2
    mean = mean_c.sum(dim=0) / c  # (P, V)
    var = (second_c.sum(dim=0) / c - mean * mean).clamp_min(0)
    std = var.sqrt()
    # constant D: std 0 within rounding; mean > 0 -> +inf, mean 0 -> -inf (never chosen before a real pair)
    flat_d = std <= 1e-12
    score = mean / std.where(~flat_d, torch.ones_like(std))
    score = torch.where(flat_d, torch.where(mean > 1e-12, torch.inf, -torch.inf), score)
    return score


@register_attack("one-pixel-shortcut")
@dataclass(frozen=True, kw_only=True)
class OnePixelShortcut(DataProtection):
    """One-Pixel Shortcut (OPS). Wu, Chen, Xie, Huang, "One-Pixel Shortcut: on the Learning Preference
    of Deep Neural Networks", ICLR 2023, arXiv 2205.12141; reference `cychomatica/One-Pixel-Shotcut`
    (`perturb.py`, `pixel_search`).

    Model-free: for each class c in order, among every position (r, w) and extreme colour v in {0, 1}^C,
    the pair with the highest `pixel_scores` over the class's images is chosen, excluding pairs an
    earlier class took; that pixel is set to v in every image of class c. A network learns the one
    pixel that predicts the label perfectly instead of the digits or objects, and an L-inf adversarial
    training does not remove a perturbation bounded in L0 (the paper: ResNet-18 on CIFAR-10-S under
    adversarial training at 10.61% test accuracy, against 83.02% for error-minimizing noise).

    `sparsity` s > 1 writes the s best pairs of a class, at distinct positions. Deviations from the
    reference: it hard-codes 10 classes and 3 channels (here any K and C: grayscale has 2 colours);
    ties go to the lowest (position, colour) index, where the reference takes the last entry of NumPy's
    unstable argsort; it loops over positions where this scores them all at once. CIFAR-10-S (OPS on
    top of error-minimizing noise) is not built in.

    The perturbation is L0 = `sparsity` pixels per image (reported as `l0_pixels`), of any L-inf size.
    """

    norm = "l0"

    sparsity: int = param(1, ge=1, help="pixels set per image (the best pairs of its class)")

    def _protect(
        self,
        x: Tensor,
        y: Tensor,
        num_classes: int,
        gen: torch.Generator,
        build: ModelFactory | None,
        progress: ProgressFn | None,
    ) -> tuple[Tensor, dict[str, Any]]:
        _, c, h, w = x.shape
        if self.sparsity > h * w:
            raise DataError(f"one-pixel-shortcut: sparsity {self.sparsity} exceeds the {h * w} pixels of an image")
        colours = corner_colours(c)
        used = torch.zeros(h * w, colours.shape[0], dtype=torch.bool)
        out = x.clone()
        pixels: dict[str, list[dict[str, Any]]] = {}
        classes = [k for k in range(num_classes) if bool((y == k).any())]
        for done, k in enumerate(classes):
            members = (y == k).nonzero().squeeze(1)
            score = pixel_scores(x[members], colours).masked_fill(used, -torch.inf)  # (P, V)
            chosen = []
            for _ in range(self.sparsity):
                best = int(score.flatten().argmax())  # the first of ties: lowest position, then colour
                pos, col = divmod(best, colours.shape[0])
                used[pos, col] = True
                score[pos, :] = -torch.inf  # one colour per position within a class
                chosen.append((pos, col))
                r, q = divmod(pos, w)
                out[members, :, r, q] = colours[col].to(out)
            pixels[str(k)] = [{"row": p // w, "col": p % w, "colour": colours[v].tolist()} for p, v in chosen]
            report(progress, "one-pixel-shortcut", done + 1, len(classes))
        return out, {"pixels": pixels}
