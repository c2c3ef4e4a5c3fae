"""Poisoning and backdoor attacks (family `backdoor`), one class per file."""

from bastion.attacks.poisoning.badnets import BadNets
from bastion.attacks.poisoning.base import Poisoned, PoisoningAttack
from bastion.attacks.poisoning.blend import Blend
from bastion.attacks.poisoning.label_consistent import LabelConsistent
from bastion.attacks.poisoning.wanet import WaNet

__all__ = ["BadNets", "Blend", "LabelConsistent", "Poisoned", "PoisoningAttack", "WaNet"]
