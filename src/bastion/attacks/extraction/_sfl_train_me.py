"""`train-me`: split-learning extraction from the attacker's own data, no query (Li et al., arXiv 2303.08581).

Reference `zlijingtao/SFL-MEA` (`old-commit`) `attacks/model_extraction_attack.py`, `TrainME_option`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.extraction._sfl_base import Attacker, SplitExtractionAttack, ce_epoch
from bastion.core.progress import ProgressFn

__all__ = ["TrainME"]


@register_attack("train-me")
@dataclass(frozen=True, kw_only=True)
class TrainME(SplitExtractionAttack):
    """Train-ME: the malicious client trains Ŝ on its own labelled data through the C it holds, with
    plain CE and the reference's augmentation (4-pixel crop, flip, rotation within 15 degrees). It sends
    no gradient query: the budget is not used. The paper runs it with 2% and 20% of the training set."""

    needs = "own"
    source = "the attacker's own labelled data"

    def planned_queries(self, num_classes: int, n_own: int, n_aux: int) -> int:
        return 0

    def _collect(self, atk: Attacker, gen: torch.Generator, progress: ProgressFn | None) -> tuple[Tensor, Tensor]:
        assert atk.x_own is not None and atk.y_own is not None
        return atk.x_own, atk.y_own

    def _epoch(
        self, surrogate: nn.Module, opt: torch.optim.Optimizer, atk: Attacker, data: object, gen: torch.Generator
    ) -> float:
        x, y = data  # type: ignore[misc]
        return ce_epoch(surrogate, opt, atk, x, y, gen, batch_size=self.batch_size, flip=self.flip)
