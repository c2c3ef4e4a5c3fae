"""`activation-clustering`: poisons hide in the smaller of two clusters of a class's activations (Chen et al., 2018)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from bastion.core.params import param
from bastion.core.victim import Victim
from bastion.defenses.detect.backdoor.base import DataInspector
from bastion.defenses.detect.backdoor.spectral import per_class
from bastion.defenses.detect.registry import register_detector

__all__ = ["ActivationClustering"]


@register_detector("activation-clustering")
@dataclass(frozen=True, kw_only=True)
class ActivationClustering(DataInspector):
    """Activation clustering. Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava,
    "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering", arXiv 1811.03728;
    reference IBM ART (`art/defences/detector/poison/activation_defence.py`, `clustering_analyzer.py`)
    and the port in vtu81/backdoor-toolbox (`cleansers_tool_box/activation_clustering.py`).

    Per label class: the last hidden layer's activations of its training images (`Victim.features`,
    the input of the last `nn.Linear`), reduced to `dims` (10) dimensions by PCA (ART's default) or
    FastICA (the paper's, `reduce="ica"`), both centring them, then k-means with k = 2 (seeded, 10
    initialisations). The poisons of a class sit in one cluster; which cluster is suspect depends on
    `rule`:

    - `relative-size` (default): the smaller cluster, if it holds less than `size_threshold` (35%) of
      the class (the paper's relative-size analysis; ART's threshold). A clean class splits about
      evenly, or not along a trigger, and keeps all its images.
    - `smaller`: the smaller cluster of every class, always (ART's default analysis): it removes a
      cluster from clean classes too.
    - `silhouette`: the smaller cluster, if it holds less than `size_threshold` of the class and the
      two-cluster silhouette score exceeds `silhouette_threshold` (0.1, ART's), i.e. the split is real.

    The paper's third analysis, exclusionary reclassification (retrain without a cluster and see where
    it goes), is not offered: it trains a model per class.

    Scores, for the AUROC: one minus the share of its class in the image's cluster, so that images in
    small clusters rank first whatever the rule decides; ties within a cluster.

    Measured on `mnist5k` (the audit's `small_cnn` recipe, BadNets at 5% to class 0): class 0 splits
    400 / 200 with the 200 poisons alone in the smaller cluster (silhouette 0.52), every other class no
    smaller than 37%: all poisons removed and no clean image (AUROC 1.000); retrained, ASR 100% -> 0.0%
    at clean accuracy 98.8%; the same removals at seeds 1 and 2. `rule="smaller"` removes the poisons
    and 38% of the clean images; `reduce="ica"` the poisons and 6% (AUROC 0.940). FastICA returns every
    component at unit variance, so a trigger's direction weighs no more than any other kept: with many
    kept dimensions of noise k-means may split along noise instead (on the tests' planted features, 10
    of 16 dimensions find the planted split at 1 seed of 4, 3 dimensions at 8 of 8).
    """

    dims: int = param(10, ge=1, help="dimensions kept before clustering")
    reduce: Literal["pca", "ica"] = param("pca", help="PCA (ART's default) or FastICA (the paper's)")
    rule: Literal["relative-size", "smaller", "silhouette"] = param(
        "relative-size", help="which cluster is removed: relative-size, smaller, silhouette"
    )
    size_threshold: float = param(0.35, gt=0, le=0.5, help="a cluster below this share of its class is suspect")
    silhouette_threshold: float = param(0.1, ge=-1, le=1, help="rule=silhouette: the split must score above this")

    def _inspect(self, victim: Victim, x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, dict]:
        feats = victim.features(x).double().cpu().numpy()
        scores = torch.zeros(y.numel(), dtype=torch.float64)
        removed = torch.zeros(y.numel(), dtype=torch.bool)
        per: dict[str, dict[str, float]] = {}
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        for idx in per_class(y):
            labels, silhouette = self._cluster(feats[idx.numpy()], seed)
            share = np.bincount(labels, minlength=2) / labels.size
            small = int(np.argmin(share))
            scores[idx] = torch.from_numpy(1.0 - share[labels])
            if self._suspect(float(share[small]), silhouette):
                removed[idx[torch.from_numpy(labels == small)]] = True
            cls = str(int(y[idx[0]]))
            per[cls] = {"smaller_share": float(share[small]), "silhouette": silhouette}
        return scores, removed, {"classes": per}

    def _cluster(self, a: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        """Two-cluster labels (n,) of one class's activations (n, D) and the split's silhouette score."""
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA, FastICA
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.metrics import silhouette_score

        if a.shape[0] < 3:  # nothing to split: one cluster, no silhouette
            return np.zeros(a.shape[0], dtype=np.int64), 0.0
        dims = min(self.dims, a.shape[0] - 1, a.shape[1])
        if self.reduce == "pca":
            reduced = PCA(n_components=dims, random_state=seed).fit_transform(a)
        else:  # FastICA may stop short of its tolerance on activations; its components still serve k-means
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                ica = FastICA(n_components=dims, random_state=seed, whiten="unit-variance", max_iter=1000)
                reduced = ica.fit_transform(a)
        labels = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced).astype(np.int64)
        if np.unique(labels).size < 2:
            return labels, 0.0
        return labels, float(silhouette_score(reduced, labels))

    def _suspect(self, smaller_share: float, silhouette: float) -> bool:
        if self.rule == "smaller":
            return True
        small = smaller_share < self.size_threshold
        return small and (self.rule == "relative-size" or silhouette > self.silhouette_threshold)
