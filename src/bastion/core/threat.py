"""ThreatModel: what the attacker may do."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from bastion.core.errors import ConfigError

__all__ = ["Access", "Norm", "ThreatModel"]

Norm = Literal["linf", "l2", "l0"]
# what an attack needs: the gradients, the scores, the top-k scores, the labels only; or, poisoning, the training data
Access = Literal["white-box", "scores", "top-k", "label", "training-data"]


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """The attacker's budget.

    What the attacker sees of the model (gradients, scores or labels: `Access`) is not a field here: it
    is what the attack needs (`EvasionAttack.access`), one fact recorded with each result, so a threat
    model and an attack can never disagree about it.

    Attributes:
        norm: the perturbation norm, `linf`, `l2` or `l0` (number of changed pixels).
        eps: the perturbation budget in that norm, in input units ([0, 1] pixels).
        bounds: the valid input range; every adversarial input stays inside it.
        targeted: whether the attacker aims at a given class rather than any wrong one.
        max_queries: per-sample query budget for black-box access (`None`: no budget).
    """

    norm: Norm = "linf"
    eps: float = 0.3
    bounds: tuple[float, float] = (0.0, 1.0)
    targeted: bool = False
    max_queries: int | None = None

    def __post_init__(self) -> None:
        if self.norm not in get_args(Norm):
            raise ConfigError(f"threat model norm must be one of {', '.join(get_args(Norm))}; got {self.norm!r}")
        if not (isinstance(self.eps, int | float) and math.isfinite(self.eps) and self.eps >= 0):
            raise ConfigError(f"eps must be a finite number >= 0; got {self.eps!r}")
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"bounds must be two finite numbers, low < high; got {self.bounds!r}")
        object.__setattr__(self, "bounds", (float(lo), float(hi)))
        object.__setattr__(self, "eps", float(self.eps))
        if self.max_queries is not None and self.max_queries < 1:
            raise ConfigError(f"max_queries must be at least 1 (or None for no budget); got {self.max_queries}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bounds"] = list(self.bounds)
        return d
