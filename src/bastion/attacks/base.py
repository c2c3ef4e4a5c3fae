"""The base every attack shares, whatever its family: a frozen, keyword-only dataclass whose `param`
fields are the method's hyperparameters (with the paper's defaults), a `seed`, and the registered
name and family. What an attack receives and returns belongs to its family's base: `EvasionAttack`
(`bastion.attacks.evasion.base`) attacks inputs through a `Victim` or an `Oracle`;
`MembershipAttack` (`bastion.attacks.privacy.base`) scores candidates as members of a training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bastion.core.params import params_dict, validate_params
from bastion.core.registry import ATTACKS
from bastion.core.threat import Access

__all__ = ["Attack", "register_attack"]


def register_attack(name: str) -> Any:
    """Class decorator: set `cls.name` and add the class to the `ATTACKS` registry under its `family`."""

    def add(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        ATTACKS.register(name, family=cls.family)(cls)
        return cls

    return add


@dataclass(frozen=True, kw_only=True)
class Attack:
    """Base of every attack.

    Class attributes a subclass (or its family's base) sets:
        family: the attack's family (`evasion`, `membership`, ...): the audit scenario kind that runs it.
        access: what the attack needs of the model: its gradients (`white-box`), its scores, or its
            labels only (`label`).
    """

    name: ClassVar[str] = "attack"
    family: ClassVar[str] = ""
    access: ClassVar[Access] = "white-box"

    seed: int = 0

    def __post_init__(self) -> None:
        validate_params(self)

    def params(self) -> dict[str, Any]:
        """The hyperparameters as plain JSON types (threat model and seed are recorded separately)."""
        return params_dict(self)
