"""bastion.attacks: one sub-package per family; each attack is one class in one file, registered by name."""

from bastion.attacks.base import Attack, register_attack

__all__ = ["Attack", "register_attack"]
