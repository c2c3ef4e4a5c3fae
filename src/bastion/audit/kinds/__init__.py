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

__all__ = [
    "KINDS",
    "BackdoorKind",
    "BitFlipKind",
    "EvasionKind",
    "ExtractionKind",
    "MembershipKind",
    "MethodParams",
    "OODKind",
    "Scenario",
    "ScenarioKind",
    "ScenarioResult",
    "presenters",
    "register_kind",
]
