"""Data protection, unlearnable examples (family `protection`): perturb a training set so that a model
trained on it learns little; one class per file."""

from bastion.attacks.poisoning.protect.base import DataProtection, ModelFactory, Protected, perturbation_size
from bastion.attacks.poisoning.protect.error_min import ErrorMinimizing
from bastion.attacks.poisoning.protect.ops import OnePixelShortcut
from bastion.attacks.poisoning.protect.random_noise import RandomNoise
from bastion.attacks.poisoning.protect.sep import SelfEnsembleProtection

__all__ = [
    "DataProtection",
    "ErrorMinimizing",
    "ModelFactory",
    "OnePixelShortcut",
    "Protected",
    "RandomNoise",
    "SelfEnsembleProtection",
    "perturbation_size",
]
