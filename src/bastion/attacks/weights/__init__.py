"""Weight attacks (family `bitflip`): flipping bits of an 8-bit quantized copy of a model, one class per file."""

from bastion.attacks.weights.base import AttackBatch, BitFlipAttack
from bastion.attacks.weights.bfa import BFA
from bastion.attacks.weights.quantize import QuantizedModel, quantize_int8
from bastion.attacks.weights.random_flip import RandomFlip
from bastion.attacks.weights.t_bfa import TBFA

__all__ = ["BFA", "TBFA", "AttackBatch", "BitFlipAttack", "QuantizedModel", "RandomFlip", "quantize_int8"]
