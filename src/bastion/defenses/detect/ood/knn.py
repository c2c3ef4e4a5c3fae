"""`knn`: distance to the k-th nearest training feature, on the unit sphere (Sun et al., ICML 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.core.errors import DataError
from bastion.core.ops import batch_slices
from bastion.core.params import param
from bastion.core.victim import Victim
from bastion.defenses.detect.ood.base import OODDetector, register_detector

__all__ = ["KNN", "unit"]


def unit(h: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm, as the references do: h / (|h| + 1e-10)."""
    return h / (h.norm(dim=1, keepdim=True) + 1e-10)


@register_detector("knn")
@dataclass(frozen=True, kw_only=True)
class KNN(OODDetector):
    """Deep nearest neighbours. Sun, Ming, Zhu, Li, "Out-of-Distribution Detection with Deep Nearest
    Neighbors", ICML 2022, arXiv 2204.06507; reference `deeplearning-wisc/knn-ood` (`run_cifar.py`).

    Fitted on the training images: their penultimate features (`Victim.features`), normalised to unit
    length. Score: minus the Euclidean distance from the input's normalised feature to its k-th nearest
    training feature, computed exactly in chunks (the reference uses faiss `IndexFlatL2`, which returns
    squared distances: the same ranking). Default k = 50, the reference's for CIFAR-10 (50,000 training
    images; it uses 1,000 on ImageNet's full set).
    """

    fits = True

    k: int = param(50, ge=1, help="the neighbour whose distance is the score")

    def _fit(self, victim: Victim, x_train: Tensor, y_train: Tensor) -> Any:
        bank = unit(victim.features(x_train).float())  # (M, D) kept on the victim's device, where the distances run
        if self.k > bank.shape[0]:
            raise DataError(f"knn: k = {self.k} but only {bank.shape[0]} training images to compare with")
        return bank

    def _score(self, victim: Victim, x: Tensor, state: Any) -> Tensor:
        q = unit(victim.features(x).float()).to(state.device)
        out = [
            torch.cdist(q[s], state).topk(self.k, dim=1, largest=False).values[:, -1]
            for s in batch_slices(q.shape[0], 1024)
        ]
        return -torch.cat(out).double().cpu() if out else torch.zeros(0, dtype=torch.float64)
