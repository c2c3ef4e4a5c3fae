"""The OOD-detector contract. A feature-based detector (`fits = True`) first learns from the
in-distribution training images and their labels (`fit`, once, however many OOD sets follow); an
output-based one needs nothing. `OODDetector.run` is final: it scores in-distribution and
out-of-distribution inputs (higher = more in-distribution, the OOD literature's convention) and
measures the separation as a `DetectionResult` whose positives are the in-distribution inputs."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from bastion.core.errors import ConfigError, DataError
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

    fits: ClassVar[bool] = False  # whether `run` needs the state `fit` returns

    @final
    def fit(self, victim: Victim, x_train: Tensor, y_train: Tensor) -> Any:
        """What the detector learns from in-distribution training images (N, C, H, W) and labels (N,),
        to pass to `run` as `state`; None for a detector that reads the model's outputs only."""
        if not self.fits:
            return None
        victim.check_input(x_train)
        if y_train.shape != (x_train.shape[0],):
            raise DataError(f"{self.name}: y_train must be (N,) for N={x_train.shape[0]} training images")
        if x_train.shape[0] < 2:
            raise DataError(f"{self.name}: needs at least 2 training images to fit")
        return self._fit(victim, x_train, y_train.cpu())

    def _fit(self, victim: Victim, x_train: Tensor, y_train: Tensor) -> Any:
        """The state a fitting detector learns (features, statistics); every detector with `fits` overrides
        it (checked when the class is defined), the others learn nothing."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.fits and cls._fit is OODDetector._fit:
            raise TypeError(f"{cls.__name__} sets fits = True and must define _fit, the state it learns")

    @abstractmethod
    def _score(self, victim: Victim, x: Tensor, state: Any) -> Tensor:
        """Scores (N,) for inputs (N, C, H, W), higher = more in-distribution."""

    @final
    def run(self, victim: Victim, x_id: Tensor, x_ood: Tensor, *, state: Any = None) -> DetectionResult:
        """Score in-distribution `x_id` and out-of-distribution `x_ood`; positives are the former.
        `state` is what `fit` returned, for a detector that fits."""
        victim.check_input(x_id)
        victim.check_input(x_ood)
        if self.fits and state is None:
            raise ConfigError(f"{self.name} learns from the training images: call fit() and pass its state")
        start = time.perf_counter()
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
