"""Model extraction (family `extraction`): stealing a model through its query API, one class per file."""

from bastion.attacks.extraction.base import ExtractionAttack, ExtractionContext, soft_cross_entropy
from bastion.attacks.extraction.jbda import JBDA, jacobian_augment
from bastion.attacks.extraction.knockoff import Knockoff

__all__ = ["JBDA", "ExtractionAttack", "ExtractionContext", "Knockoff", "jacobian_augment", "soft_cross_entropy"]
