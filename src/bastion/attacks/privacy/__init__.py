"""Privacy attacks: membership inference (family `membership`), one class per file."""

from bastion.attacks.privacy.base import MembershipAttack
from bastion.attacks.privacy.entropy import Entropy
from bastion.attacks.privacy.loss_threshold import LossThreshold
from bastion.attacks.privacy.modified_entropy import ModifiedEntropy

__all__ = ["Entropy", "LossThreshold", "MembershipAttack", "ModifiedEntropy"]
