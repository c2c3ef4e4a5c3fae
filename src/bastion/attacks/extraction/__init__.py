"""Model extraction: stealing a model through the answers it gives.

Family `extraction`: attacks on a query API, one class per file (`knockoff`, `jbda`). Family
`split-extraction`, in `bastion.attacks.extraction.sfl`: the five attacks of Li et al. (arXiv
2303.08581) on split federated learning, whose server answers only with gradients.
"""

from bastion.attacks.extraction import sfl
from bastion.attacks.extraction.base import ExtractionAttack, ExtractionContext, soft_cross_entropy
from bastion.attacks.extraction.jbda import JBDA, jacobian_augment
from bastion.attacks.extraction.knockoff import Knockoff
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
    "JBDA",
    "CraftME",
    "ExtractionAttack",
    "ExtractionContext",
    "Knockoff",
    "SoftTrainME",
    "SplitExtractionAttack",
    "SplitExtractionResult",
    "SplitFed",
    "SplitModel",
    "SplitOracle",
    "TrainME",
    "jacobian_augment",
    "sfl",
    "soft_cross_entropy",
    "split_model",
]
