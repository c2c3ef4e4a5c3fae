"""bastion.audit: plans (YAML scenarios of registered kinds), the audit target, and the runner that
applies a plan and stores each result, its scenarios run here or as Ray tasks (the executors)."""

import bastion.attacks.evasion
import bastion.attacks.poisoning
import bastion.attacks.poisoning.protect
import bastion.attacks.privacy
import bastion.attacks.weights
import bastion.defenses  # noqa: F401  (register what plans name: attacks, OOD detectors, post-processors)
from bastion.audit.executor import Executor, LocalExecutor, TargetSource
from bastion.audit.kinds import KINDS, Scenario, ScenarioKind, ScenarioResult, presenters
from bastion.audit.plan import Plan, builtin_plans, load_plan, parse_plan
from bastion.audit.ray_executor import RayExecutor
from bastion.audit.runner import AuditJob, AuditOutcome, ScenarioEvent, run_audit, run_audits
from bastion.audit.target import AuditTarget, Trainer

__all__ = [
    "KINDS",
    "AuditJob",
    "AuditOutcome",
    "AuditTarget",
    "Executor",
    "LocalExecutor",
    "Plan",
    "RayExecutor",
    "Scenario",
    "ScenarioEvent",
    "ScenarioKind",
    "ScenarioResult",
    "TargetSource",
    "Trainer",
    "builtin_plans",
    "load_plan",
    "parse_plan",
    "presenters",
    "run_audit",
    "run_audits",
]
