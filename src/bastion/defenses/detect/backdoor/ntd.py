"""`ntd`: non-transferability-enabled backdoor detection (Li et al., arXiv 2111.11157)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from scipy import stats
from torch import Tensor

from bastion.core.errors import DataError
from bastion.core.params import param
from bastion.core.victim import Victim
from bastion.defenses.detect.backdoor.base import InputDetector
from bastion.defenses.detect.registry import register_detector

__all__ = ["NTD", "similarity"]

Similarity = Literal["tanimoto", "cosine", "pearson"]


def similarity(a: Tensor, b: Tensor, kind: Similarity) -> Tensor:
    """Row-wise similarity of feature vectors a (..., D) and b (..., D): Tanimoto a.b / (|a|^2 + |b|^2 - a.b)
    (the reference's default), cosine, or Pearson correlation."""
    if kind == "pearson":
        a, b = a - a.mean(dim=-1, keepdim=True), b - b.mean(dim=-1, keepdim=True)
        kind = "cosine"
    dot = (a * b).sum(dim=-1)
    if kind == "cosine":
        return dot / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    return dot / ((a * a).sum(dim=-1) + (b * b).sum(dim=-1) - dot).clamp_min(1e-12)


@register_detector("ntd")
@dataclass(frozen=True, kw_only=True)
class NTD(InputDetector):
    """NTD. Li, Ma, Zhang, Gao, Abuadbba, Fu, Zheng, Al-Sarawi, Abbott, "NTD: Non-Transferability Enabled
    Backdoor Detection", arXiv 2111.11157 (IEEE TIFS); reference backdoorrrr/NTD-backdoor-detection.

    The defender holds a feature extractor (FE) from an independent source. A trigger hijacks the
    model under test but does not transfer to the FE, so a triggered input does not resemble, in the FE's
    feature space, clean images of the class the model predicts for it. For an input x the model
    predicts ŷ; `n` clean held-out images of class ŷ are drawn (seeded, without replacement) and the
    score is minus their mean similarity to x in FE space (Tanimoto by default, as the reference).

    The FE is the `reference` model given to `run` (its penultimate features, `Victim.features`): in an
    audit, the audited model, trained on clean data, screening the copy trained on poisoned data. The
    threshold follows the reference's offline step: `rounds` times, a held-out image is compared with
    `n` others of its class (an intra value) and with `n` images of a random other class (an inter
    value, the stand-in for a trigger input); a log-gamma distribution fitted to the intra values gives
    θ = its `frr` quantile, and a gamma fitted to the inter values the offline estimate of the share of
    trigger inputs accepted (`extra["far_estimate"]`). `threshold="quantile"` uses empirical quantiles
    instead. Defaults are the reference's: n = 3, Tanimoto, FRR 0.5%. Cost: two forward passes per
    input (the model and the FE), the held-out features cached.
    """

    frr: float = param(0.005, gt=0, lt=1, help="false-rejection rate the threshold is set for (the reference's 0.5%)")
    n: int = param(3, ge=1, help="held-out images of the predicted class compared with each input")
    similarity: Similarity = param("tanimoto", help="tanimoto (reference), cosine or pearson")
    threshold: Literal["loggamma", "quantile"] = param("loggamma", help="log-gamma fit (reference) or quantile")
    rounds: int = param(1000, ge=10, help="offline comparisons the threshold is fitted on")

    def forwards_per_input(self) -> int:
        return 2

    def _fit(self, victim: Victim, x: Tensor, y: Tensor, gen: torch.Generator, reference: Victim | None) -> Any:
        if reference is None:
            raise DataError("ntd needs an independent model as its feature extractor: pass reference=...")
        y = y.cpu()
        counts = torch.bincount(y, minlength=victim.num_classes)
        if int(counts.min()) < self.n + 1:
            raise DataError(
                f"ntd: every class needs at least n + 1 = {self.n + 1} held-out images; the fewest are "
                f"{int(counts.min())} (class {int(counts.argmin())})"
            )
        return {"fe": reference, "feats": reference.features(x).cpu().double(), "y": y}

    def _draw(self, pool: Tensor, m: int, gen: torch.Generator) -> Tensor:
        """m rows of n distinct positions in `pool` (indices into the held-out set), seeded."""
        order = torch.rand(m, pool.numel(), generator=gen).argsort(dim=1)[:, : self.n]
        return pool[order]

    def _mean_sim(self, f: Tensor, feats: Tensor, picks: Tensor) -> Tensor:
        return similarity(f.unsqueeze(1), feats[picks], self.similarity).mean(dim=1)

    def _score(self, victim: Victim, x: Tensor, state: Any, gen: torch.Generator) -> Tensor:
        y_hat = victim.predict(x).cpu()
        f = state["fe"].features(x).cpu().double()
        s = torch.empty(x.shape[0], dtype=torch.float64)
        for c in y_hat.unique().tolist():
            rows = (y_hat == c).nonzero().flatten()
            picks = self._draw((state["y"] == c).nonzero().flatten(), rows.numel(), gen)
            s[rows] = self._mean_sim(f[rows], state["feats"], picks)
        return -s

    def _threshold(self, victim: Victim, x: Tensor, y: Tensor, state: Any, gen: torch.Generator) -> float:
        feats, labels = state["feats"], state["y"]
        k = int(labels.max()) + 1
        anchors = torch.randint(labels.numel(), (self.rounds,), generator=gen)
        others = (labels[anchors] + torch.randint(1, k, (self.rounds,), generator=gen)) % k
        intra, inter = torch.empty(self.rounds, dtype=torch.float64), torch.empty(self.rounds, dtype=torch.float64)
        for r, (i, o) in enumerate(zip(anchors.tolist(), others.tolist(), strict=True)):
            same = ((labels == labels[i]) & (torch.arange(labels.numel()) != i)).nonzero().flatten()
            intra[r] = self._mean_sim(feats[i : i + 1], feats, self._draw(same, 1, gen))[0]
            inter[r] = self._mean_sim(feats[i : i + 1], feats, self._draw((labels == o).nonzero().flatten(), 1, gen))[0]
        if self.threshold == "quantile":
            theta = float(torch.quantile(intra, self.frr))
            state["far_estimate"] = float((inter >= theta).double().mean())
        else:
            theta = float(stats.loggamma.ppf(self.frr, *stats.loggamma.fit(intra.numpy())))
            state["far_estimate"] = float(stats.gamma.sf(theta, *stats.gamma.fit(inter.numpy())))
        state["intra_mean"], state["inter_mean"] = float(intra.mean()), float(inter.mean())
        return -theta

    def _records(self, state: Any) -> dict[str, Any]:
        return {k: state[k] for k in ("far_estimate", "intra_mean", "inter_mean") if k in state}
