"""Evasion attacks: white-box (gradient) and black-box (score- and decision-based), one class per file."""

from bastion.attacks.evasion.apgd import APGDCE, APGDDLR, APGDT
from bastion.attacks.evasion.autoattack import AutoAttack
from bastion.attacks.evasion.bandits import Bandits
from bastion.attacks.evasion.cgba import CGBA
from bastion.attacks.evasion.cgba_h import CGBAH
from bastion.attacks.evasion.fab import FABT
from bastion.attacks.evasion.fg_uap import FGUAP
from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.hsja import HSJA
from bastion.attacks.evasion.mi_fgsm import MIFGSM
from bastion.attacks.evasion.nes import NES
from bastion.attacks.evasion.pgd import PGD
from bastion.attacks.evasion.sign_opt import SignOPT
from bastion.attacks.evasion.simba import SimBA
from bastion.attacks.evasion.square import Square
from bastion.attacks.evasion.transfer import Transfer
from bastion.attacks.evasion.uap import UAP

__all__ = [
    "APGDCE",
    "APGDDLR",
    "APGDT",
    "CGBA",
    "CGBAH",
    "FABT",
    "FGSM",
    "FGUAP",
    "HSJA",
    "MIFGSM",
    "NES",
    "PGD",
    "UAP",
    "AutoAttack",
    "Bandits",
    "SignOPT",
    "SimBA",
    "Square",
    "Transfer",
]
