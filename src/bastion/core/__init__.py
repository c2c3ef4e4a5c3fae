"""bastion.core: the contracts every layer shares. Tensors only, no I/O; imports torch alone."""

from bastion.core.errors import (
    BastionError,
    CheckpointError,
    ConfigError,
    DataError,
    EndpointError,
    ModelError,
    QueryBudgetExceeded,
    StoreError,
    UnknownNameError,
)
from bastion.core.ops import Normalize, batch_slices, resolve_device
from bastion.core.oracle import BlackBoxModel, Oracle, OutputMode, PostProcessor, Reveals
from bastion.core.random import make_generator, seed_everything
from bastion.core.registry import ATTACKS, DATASETS, DEFENSES, MODELS, RECIPES, Registry
from bastion.core.results import AttackResult, perturbation_norms
from bastion.core.threat import Access, Norm, ThreatModel
from bastion.core.victim import Victim

__all__ = [
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "MODELS",
    "RECIPES",
    "Access",
    "AttackResult",
    "BastionError",
    "BlackBoxModel",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EndpointError",
    "ModelError",
    "Norm",
    "Normalize",
    "Oracle",
    "OutputMode",
    "PostProcessor",
    "QueryBudgetExceeded",
    "Registry",
    "Reveals",
    "StoreError",
    "ThreatModel",
    "UnknownNameError",
    "Victim",
    "batch_slices",
    "make_generator",
    "perturbation_norms",
    "resolve_device",
    "seed_everything",
]
