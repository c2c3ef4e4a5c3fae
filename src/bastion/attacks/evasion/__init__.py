"""Evasion attacks: white-box (gradient) and black-box (score- and decision-based), one class per file."""

from bastion.attacks.evasion.apgd import APGDCE, APGDDLR, APGDT
from bastion.attacks.evasion.autoattack import AutoAttack
from bastion.attacks.evasion.fab import FABT
from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.pgd import PGD
from bastion.attacks.evasion.square import Square

__all__ = ["APGDCE", "APGDDLR", "APGDT", "FABT", "FGSM", "PGD", "AutoAttack", "Square"]
