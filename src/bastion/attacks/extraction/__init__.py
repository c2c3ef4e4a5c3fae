"""Model extraction (family `split-extraction` here): stealing a model through the answers it gives.

`bastion.attacks.extraction.sfl`: the five attacks of Li et al. (arXiv 2303.08581) on split federated
learning, whose server answers only with gradients.
"""

from bastion.attacks.extraction import sfl
from bastion.attacks.extraction.sfl import (
    GANME,
    GMME,
    CraftME,
    SoftTrainME,
    SplitExtractionAttack,
    SplitExtractionResult,
    SplitFed,
    SplitModel,
    SplitOracle,
    TrainME,
    split_model,
)

__all__ = [
    "GANME",
    "GMME",
    "CraftME",
    "SoftTrainME",
    "SplitExtractionAttack",
    "SplitExtractionResult",
    "SplitFed",
    "SplitModel",
    "SplitOracle",
    "TrainME",
    "sfl",
    "split_model",
]
