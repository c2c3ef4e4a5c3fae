"""Scenario kinds: each family of threats enters an audit as one kind (see `base.py`)."""

from bastion.audit.kinds.backdoor import BackdoorKind
from bastion.audit.kinds.base import (
    KINDS,
    MethodParams,
    Scenario,
    ScenarioKind,
    ScenarioResult,
    presenters,
    register_kind,
)
from bastion.audit.kinds.bitflip import BitFlipKind
from bastion.audit.kinds.evasion import EvasionKind
from bastion.audit.kinds.membership import MembershipKind
from bastion.audit.kinds.ood import OODKind
from bastion.audit.kinds.ownership import OwnershipKind

__all__ = [
    "KINDS",
    "BackdoorKind",
    "BitFlipKind",
    "EvasionKind",
    "MembershipKind",
    "MethodParams",
    "OODKind",
    "OwnershipKind",
    "Scenario",
    "ScenarioKind",
    "ScenarioResult",
    "presenters",
    "register_kind",
]
