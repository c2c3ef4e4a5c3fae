"""The OOD-detector contract. `OODDetector.run` is final: it fits the detector on in-distribution
training images when it needs them (feature-based detectors), scores in-distribution and
out-of-distribution inputs (higher = more in-distribution, the OOD literature's convention) and
measures the separation as a `DetectionResult` whose positives are the in-distribution inputs."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from bastion.core.params import params_dict, validate_params
from bastion.core.results import DetectionResult
from bastion.core.victim import Victim
from bastion.defenses.detect.registry import register_detector

__all__ = ["OODDetector", "register_detector"]


@dataclass(frozen=True, kw_only=True)
class OODDetector(ABC):
    """Base of the OOD detectors: a frozen dataclass of `param` fields (`bastion list defenses`)."""

    name: ClassVar[str] = "ood"
    family: ClassVar[str] = "ood"

    def __post_init__(self) -> None:
        validate_params(self)

    def params(self) -> dict[str, Any]:
        return params_dict(self)

    def _fit(self, victim: Victim, x_train: Tensor) -> Any:
        """What the detector learns from in-distribution training images (nothing, by default)."""
        return None

    @abstractmethod
    def _score(self, victim: Victim, x: Tensor, state: Any) -> Tensor:
        """Scores (N,) for inputs (N, C, H, W), higher = more in-distribution."""

    @final
    def run(self, victim: Victim, x_id: Tensor, x_ood: Tensor, *, x_train: Tensor | None = None) -> DetectionResult:
        """Score in-distribution `x_id` and out-of-distribution `x_ood`; positives are the former."""
        victim.check_input(x_id)
        victim.check_input(x_ood)
        start = time.perf_counter()
        state = self._fit(victim, x_train) if x_train is not None else None
        s = torch.cat([self._score(victim, x_id, state), self._score(victim, x_ood, state)]).cpu()
        positive = torch.cat(
            [torch.ones(x_id.shape[0], dtype=torch.bool), torch.zeros(x_ood.shape[0], dtype=torch.bool)]
        )
        return DetectionResult(
            method=self.name,
            params=self.params(),
            seed=0,
            scores=s,
            positive=positive,
            seconds=time.perf_counter() - start,
        )
