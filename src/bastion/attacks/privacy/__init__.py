"""Privacy attacks: membership inference (family `membership`), one class per file."""

from bastion.attacks.privacy._shadows import ShadowReference, logit_margin, shadow_membership
from bastion.attacks.privacy.base import MembershipAttack
from bastion.attacks.privacy.entropy import Entropy
from bastion.attacks.privacy.lira import LiRA
from bastion.attacks.privacy.loss_threshold import LossThreshold
from bastion.attacks.privacy.modified_entropy import ModifiedEntropy

__all__ = [
    "Entropy",
    "LiRA",
    "LossThreshold",
    "MembershipAttack",
    "ModifiedEntropy",
    "ShadowReference",
    "logit_margin",
    "shadow_membership",
]
