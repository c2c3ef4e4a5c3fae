"""bastion.audit: plans (YAML scenarios), the runner that applies them and stores each result."""

import bastion.attacks.evasion  # noqa: F401  (registers the attacks plans name)
from bastion.audit.plan import Plan, Scenario, builtin_plans, load_plan, parse_plan
from bastion.audit.runner import AuditOutcome, AuditTarget, ScenarioEvent, run_audit

__all__ = [
    "AuditOutcome",
    "AuditTarget",
    "Plan",
    "Scenario",
    "ScenarioEvent",
    "builtin_plans",
    "load_plan",
    "parse_plan",
    "run_audit",
]
