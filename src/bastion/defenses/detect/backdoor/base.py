"""The backdoor-detection contracts, two families.

- `InputDetector` (family `backdoor-input`): a run-time screen for triggered inputs. It fits on
  held-out clean images the defender owns, sets its threshold on them for a false-rejection rate
  (`frr`), and scores inputs, higher = more likely triggered. `run` measures it on clean images
  (negatives) and triggered ones (positives); the threshold never sees the images it is measured on.
- `DataInspector` (family `backdoor-data`): inspects a (possibly poisoned) training set through the
  model trained on it, scores every training sample (higher = more likely poisoned) and says which to
  remove. `run` measures it against the known poisoned indices; retraining without the removed
  samples is the caller's (the audit's `backdoor` kind does it).

Both return a `DetectionResult` (AUROC, TPR at fixed FPRs from the scores alone) whose `extra` holds
the operating point the method chose: for input detectors the threshold and its TPR and FPR, for
inspectors the removed indices and the share of poisons and of clean samples removed.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from bastion.core.errors import DataError
from bastion.core.params import param, params_dict, validate_params
from bastion.core.random import make_generator
from bastion.core.results import DetectionResult
from bastion.core.victim import Victim

__all__ = ["DataInspector", "InputDetector"]


def _flags(n_neg: int, n_pos: int) -> Tensor:
    return torch.cat([torch.zeros(n_neg, dtype=torch.bool), torch.ones(n_pos, dtype=torch.bool)])


@dataclass(frozen=True, kw_only=True)
class InputDetector(ABC):
    """Base of the run-time trigger-input detectors: a frozen dataclass of `param` fields."""

    name: ClassVar[str] = "backdoor-input"
    family: ClassVar[str] = "backdoor-input"

    frr: float = param(0.01, gt=0, lt=1, help="false-rejection rate the threshold is set for, on held-out clean images")
    seed: int = param(0, ge=0, help="seed of the detector's random draws")

    def __post_init__(self) -> None:
        validate_params(self)

    def params(self) -> dict[str, Any]:
        return params_dict(self)

    def forwards_per_input(self) -> int:
        """Model forward passes spent screening one input."""
        return 1

    def _fit(self, victim: Victim, x: Tensor, y: Tensor, gen: torch.Generator, reference: Victim | None) -> Any:
        """What the detector learns from the defender's clean held-out images (nothing, by default);
        `reference` is the independent model `run` was given, if any."""
        return None

    @abstractmethod
    def _score(self, victim: Victim, x: Tensor, state: Any, gen: torch.Generator) -> Tensor:
        """Scores (N,) for inputs (N, C, H, W), higher = more likely triggered."""

    def _records(self, state: Any) -> dict[str, Any]:
        """Method-specific records of a fitted detector (plain JSON types) for the result's `extra`."""
        return {}

    def _threshold(self, victim: Victim, x: Tensor, y: Tensor, state: Any, gen: torch.Generator) -> float:
        """The score above which an input is flagged, from the clean held-out images: by default the
        empirical (1 - frr) quantile of their scores."""
        return float(torch.quantile(self._score(victim, x, state, gen).double(), 1 - self.frr))

    @final
    def run(
        self,
        victim: Victim,
        x_clean: Tensor,
        x_triggered: Tensor,
        *,
        x_fit: Tensor,
        y_fit: Tensor,
        reference: Victim | None = None,
    ) -> DetectionResult:
        """Fit on the held-out clean images (x_fit, y_fit), set the threshold there, and score the clean
        images `x_clean` (negatives) and the triggered images `x_triggered` (positives). `reference`
        is a model independent of the one screened (trained on other data; NTD's feature extractor),
        for detectors that use one."""
        for x in (x_clean, x_triggered, x_fit):
            victim.check_input(x)
        if x_fit.shape[0] < 2 or y_fit.shape != (x_fit.shape[0],):
            raise DataError(f"{self.name}: the held-out clean set needs at least 2 images, each with a label")
        start = time.perf_counter()
        gen = make_generator(self.seed)
        state = self._fit(victim, x_fit, y_fit, gen, reference)
        threshold = self._threshold(victim, x_fit, y_fit, state, gen)
        scores = torch.cat([self._score(victim, x_clean, state, gen), self._score(victim, x_triggered, state, gen)])
        scores = scores.double().cpu()
        positive = _flags(x_clean.shape[0], x_triggered.shape[0])
        flagged = scores > threshold
        n_screened = scores.numel()
        return DetectionResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            scores=scores,
            positive=positive,
            seconds=time.perf_counter() - start,
            queries=torch.full((n_screened,), self.forwards_per_input()),
            extra={
                "threshold": threshold if math.isfinite(threshold) else None,
                "tpr": float(flagged[positive].float().mean()) if bool(positive.any()) else None,
                "fpr": float(flagged[~positive].float().mean()) if bool((~positive).any()) else None,
                "n_fit": int(x_fit.shape[0]),
                "forwards_per_input": self.forwards_per_input(),
                **self._records(state),
            },
        )


@dataclass(frozen=True, kw_only=True)
class DataInspector(ABC):
    """Base of the training-set inspectors: a frozen dataclass of `param` fields."""

    name: ClassVar[str] = "backdoor-data"
    family: ClassVar[str] = "backdoor-data"

    seed: int = param(0, ge=0, help="seed of the inspector's random draws")

    def __post_init__(self) -> None:
        validate_params(self)

    def params(self) -> dict[str, Any]:
        return params_dict(self)

    @abstractmethod
    def _inspect(self, victim: Victim, x: Tensor, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, dict]:
        """Suspicion scores (N,) (higher = more likely poisoned), which samples to remove (N,) bool, and
        method-specific records (plain JSON types), for the training set (x, y) of `victim`."""

    @final
    def run(self, victim: Victim, x: Tensor, y: Tensor, poisoned: Tensor) -> DetectionResult:
        """Inspect the training set (x, y) whose poisoned samples `poisoned` (N,) bool are known, and
        measure the inspection against them; `extra["removed"]` lists the indices to retrain without."""
        victim.check_input(x)
        n = x.shape[0]
        if y.shape != (n,) or poisoned.shape != (n,) or poisoned.dtype != torch.bool:
            raise DataError(f"{self.name}: labels and poisoned flags must be (N,) for N={n} training images")
        start = time.perf_counter()
        scores, removed, records = self._inspect(victim, x, y.cpu(), make_generator(self.seed))
        scores, removed, poisoned = scores.double().cpu(), removed.cpu(), poisoned.cpu()
        n_poisoned = int(poisoned.sum())
        return DetectionResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            scores=scores,
            positive=poisoned,
            seconds=time.perf_counter() - start,
            extra={
                **records,
                "removed": torch.nonzero(removed).flatten().tolist(),
                "n_removed": int(removed.sum()),
                "poisons_removed": float(removed[poisoned].float().mean()) if n_poisoned else None,
                "clean_removed": float(removed[~poisoned].float().mean()) if n_poisoned < n else None,
            },
        )
