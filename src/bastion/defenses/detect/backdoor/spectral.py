"""`spectral-signatures`: the poisons of a class stand out along its top singular direction (Tran et al., 2018)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bastion.core.params import param
from bastion.core.victim import Victim
from bastion.defenses.detect.backdoor.base import DataInspector
from bastion.defenses.detect.registry import register_detector

__all__ = ["SpectralSignatures", "per_class"]


def per_class(y: Tensor) -> list[Tensor]:
    """The indices of each label present in `y` (N,), in ascending label order."""
    return [torch.nonzero(y == c).flatten() for c in torch.unique(y).tolist()]


@register_detector("spectral-signatures")
@dataclass(frozen=True, kw_only=True)
class SpectralSignatures(DataInspector):
    """Spectral signatures. Tran, Li, Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018,
    arXiv 1811.00636; reference MadryLab/backdoor_data_poisoning (`compute_corr.py`), and the port in
    vtu81/backdoor-toolbox (`cleansers_tool_box/spectral_signature.py`).

    Per label class c (Algorithm 1): the penultimate features r_i of the class's training images, as
    read by the model trained on them (`Victim.features`), centred on the class mean; v is their top
    right singular vector and τ_i = <r_i - mean, v>² the outlier score. The images with the largest
    scores are removed, and the model is trained again without them.

    How many: the paper removes 1.5·ε·n_c from a class whose poisoned share is at most ε. The defender
    states `eps`, the poisoned share of the whole training set it guards against (5%, the paper's
    smaller setting), and does not know which class the poisons joined; with `removal="worst-case"`
    (the default) every class is read as if all eps·N poisons had joined it, which removes
    ⌈1.5·eps·N⌉ from each class: the count the backdoor-toolbox port removes. With
    `removal="class-share"` eps is each class's own poisoned share and ⌈1.5·eps·n_c⌉ go (the paper's
    experiments, which know the target class and its share). Either way at most half a class goes
    (⌊n_c / 2⌋, the port's cap). `centered=False` scores |<r_i, v>| on uncentred features, as the
    MadryLab TensorFlow code does (v still from the centred features).

    Scores, for the AUROC: τ_i as it is. All classes' features live in one space, and a trigger moves
    its images far along v: on the model below the raw scores rank the poisons first (AUROC 0.999),
    where dividing each class's scores by its median or its cut-off would rank them 0.83.

    Measured on `mnist5k` (the audit's `small_cnn` recipe, BadNets at 5% to class 0: 200 poisons among
    the 600 images labelled 0): every poison removed (AUROC 0.999), with 300 images from each class
    (47% of the clean images); retrained without them, ASR 100% -> 0.0%, clean accuracy 98.3% -> 96.0%.
    `removal="class-share"` at the paper's eps = 0.1 removes 90 of class 0's 600: 45% of the poisons.
    """

    eps: float = param(0.05, gt=0, lt=1, help="poisoned share of the training set guarded against")
    removal: Literal["worst-case", "class-share"] = param(
        "worst-case", help="remove ceil(1.5 eps N) per class (worst case) or ceil(1.5 eps n_c) (eps per class)"
    )
    centered: bool = param(True, help="score centred features (the paper), or uncentred |<r, v>| (the TF code)")

    def _inspect(self, victim: Victim, x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, dict]:
        feats = victim.features(x).double().cpu()
        scores = torch.zeros(y.numel(), dtype=torch.float64)
        removed = torch.zeros(y.numel(), dtype=torch.bool)
        counts: dict[str, int] = {}
        for idx in per_class(y):
            tau = self._scores(feats[idx])
            k = self._count(idx.numel(), y.numel())
            removed[idx[torch.argsort(tau, descending=True, stable=True)[:k]]] = True
            scores[idx] = tau
            counts[str(int(y[idx[0]]))] = k
        return scores, removed, {"removed_per_class": counts}

    def _scores(self, r: Tensor) -> Tensor:
        """Outlier scores (n,) of one class's features (n, D)."""
        centred = r - r.mean(dim=0)
        if r.shape[0] < 2:
            return torch.zeros(r.shape[0], dtype=r.dtype)
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        return (centred @ v).square() if self.centered else (r @ v).abs()

    def _count(self, n_c: int, n: int) -> int:
        """Images removed from a class of n_c images in a training set of n."""
        # rounded first: 1.5 * 0.2 * 80 is 24.000000000000004 in floating point, and 24 images are meant
        want = math.ceil(round(1.5 * self.eps * (n if self.removal == "worst-case" else n_c), 9))
        return min(want, n_c // 2)
