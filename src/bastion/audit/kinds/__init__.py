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
from bastion.audit.kinds.extraction import ExtractionKind
from bastion.audit.kinds.membership import MembershipKind
from bastion.audit.kinds.ood import OODKind
from bastion.audit.kinds.ownership import OwnershipKind
from bastion.audit.kinds.protection import ProtectionKind
from bastion.audit.kinds.split_extraction import SplitExtractionKind

__all__ = [
    "KINDS",
    "BackdoorKind",
    "BitFlipKind",
    "EvasionKind",
    "ExtractionKind",
    "MembershipKind",
    "MethodParams",
    "OODKind",
    "OwnershipKind",
    "ProtectionKind",
    "Scenario",
    "ScenarioKind",
    "ScenarioResult",
    "SplitExtractionKind",
    "presenters",
    "register_kind",
]
