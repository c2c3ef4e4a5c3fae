"""Gradient-masking sanity checks, run with a white-box evaluation and reported with its result.

Each check that fails yields a warning of one shape: what was seen, and "this robustness number is
probably overestimated, because ...", with an anchor into `docs/checks.md` (auto-attack's
`checks.py` habit). The checks:

- `randomized`: outputs differ between identical forward passes;
- `probabilities`: the model returns probabilities instead of logits;
- `zero-gradient`: the loss gradient is zero or not finite on attacked samples;
- `black-box-stronger`: Square (score-based) finds adversarial examples the white-box attack missed;
- `eps-large`: robust accuracy does not fall to 0 as eps grows large;
- `more-steps`: more steps raise robust accuracy (the attack has not converged or is misled).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from bastion.attacks.evasion._gradient import loss_and_grad
from bastion.attacks.evasion._losses import ce
from bastion.attacks.evasion.base import EvasionAttack
from bastion.core.registry import ATTACKS
from bastion.core.results import AttackResult
from bastion.core.victim import Victim

__all__ = ["sanity_checks"]

DOC = "docs/checks.md"
# A check runs on at most this many samples, so that the checks cost a fraction of the evaluation.
CHECK_SAMPLES = 100
# Robust accuracy at a large eps above this share means the attack cannot break the model at all.
LARGE_EPS_MAX_ACCURACY = 0.05
# Square may find a stray sample a white-box attack missed; more than this share of the checked
# samples (and at least two) is a finding.
BLACK_BOX_MAX_SHARE = 0.01


def _warn(code: str, seen: str, because: str) -> str:
    return f"[{code}] {seen}: this robustness number is probably overestimated, because {because} (see {DOC}#{code})"


def _randomized(victim: Victim, x: Tensor) -> str | None:
    outs = torch.stack([victim.logits(x) for _ in range(5)])
    spread = float((outs - outs[0]).abs().amax())
    if spread > 1e-4 * max(1.0, float(outs.abs().amax())):
        return _warn(
            "randomized",
            f"the model's outputs differ between 5 identical forward passes (by up to {spread:.3g})",
            "gradient-based attacks then chase noise; evaluate with an adaptive attack (EOT)",
        )
    return None


def _probabilities(victim: Victim, x: Tensor) -> str | None:
    z = victim.logits(x)
    if bool(((z >= 0) & (z <= 1)).all()) and bool(torch.allclose(z.sum(1), torch.ones_like(z[:, 0]), atol=1e-4)):
        return _warn(
            "probabilities",
            "the model returns probabilities (rows in [0, 1] summing to 1), not logits",
            "the losses' gradients vanish on saturated outputs; expose the logits to the attack",
        )
    return None


def _zero_gradient(victim: Victim, x: Tensor, y: Tensor) -> str | None:
    _, _, grad = loss_and_grad(victim, x, lambda z: ce(z, y))
    flat = grad.flatten(1)
    zero = int((flat == 0).all(dim=1).sum())
    bad = int((~torch.isfinite(flat)).any(dim=1).sum())
    if zero or bad:
        return _warn(
            "zero-gradient",
            f"{zero} of {x.shape[0]} attacked samples have an all-zero gradient and {bad} a non-finite one",
            "gradient-based attacks cannot move where the gradient is masked",
        )
    return None


def _rerun(attack: EvasionAttack, victim: Victim, x: Tensor, y: Tensor, **changes: object) -> AttackResult:
    return dataclasses.replace(attack, **changes).run(victim, x, y)  # type: ignore[arg-type]


def _black_box_stronger(
    attack: EvasionAttack, result: AttackResult, victim: Victim, x: Tensor, y: Tensor
) -> str | None:
    if "square" not in ATTACKS or attack.name in ("square", "autoattack"):
        return None
    robust = (result.y_adv == result.y)[: x.shape[0]]
    if not bool(robust.any()):
        return None
    square = ATTACKS.get("square")(threat=attack.threat, seed=attack.seed, n_queries=1000)
    found = square.run(victim, x[robust], y[robust]).success
    if int(found.sum()) >= 2 and int(found.sum()) > BLACK_BOX_MAX_SHARE * x.shape[0]:
        return _warn(
            "black-box-stronger",
            f"Square (1,000 queries, no gradients) fooled {int(found.sum())} of {int(robust.sum())} samples "
            f"that {attack.name} left robust",
            "a gradient-free attack should not beat a white-box one unless the gradients mislead it",
        )
    return None


def _eps_large(attack: EvasionAttack, victim: Victim, x: Tensor, y: Tensor) -> str | None:
    t = attack.threat
    span = t.bounds[1] - t.bounds[0]
    big = max(4 * t.eps, 0.5 * span) if t.norm == "linf" else max(4 * t.eps, 0.5 * span * x[0].numel() ** 0.5)
    if t.norm == "linf":
        big = min(big, span)
    res = _rerun(attack, victim, x, y, threat=dataclasses.replace(t, eps=big))
    if res.robust_accuracy > LARGE_EPS_MAX_ACCURACY:
        return _warn(
            "eps-large",
            f"robust accuracy stays at {res.robust_accuracy:.1%} with eps raised to {big:.3g}",
            "an attack that works must reach 0% when the ball is that large",
        )
    return None


def _more_steps(attack: EvasionAttack, result: AttackResult, victim: Victim, x: Tensor, y: Tensor) -> str | None:
    steps = getattr(attack, "steps", None)
    if not isinstance(steps, int):
        return None
    base = float((result.y_adv == result.y)[: x.shape[0]].double().mean())
    more = _rerun(attack, victim, x, y, steps=2 * steps)
    # one sample of slack: random starts differ between the two runs
    if more.robust_accuracy > base + 1.0 / x.shape[0] + 1e-9:
        return _warn(
            "more-steps",
            f"robust accuracy rises from {base:.1%} to {more.robust_accuracy:.1%} with {2 * steps} steps",
            "more steps of a converged attack can only find more adversarial examples",
        )
    return None


def sanity_checks(attack: EvasionAttack, result: AttackResult, victim: Victim, x: Tensor, y: Tensor) -> list[str]:
    """Run every check on the first `CHECK_SAMPLES` samples of the evaluation; return the warnings."""
    x, y = x[:CHECK_SAMPLES].to(victim.device), y[:CHECK_SAMPLES].to(victim.device)
    attacked = result.clean_correct[: x.shape[0]]
    checks: list[Callable[[], str | None]] = [
        lambda: _randomized(victim, x),
        lambda: _probabilities(victim, x),
        lambda: _zero_gradient(victim, x[attacked], y[attacked]) if bool(attacked.any()) else None,
    ]
    # a universal perturbation (one v for all images) is weaker than per-image attacks by design: comparing
    # it with Square, a large eps or more steps would flag it, not the model
    if attack.access == "white-box" and not attack.threat.targeted and not getattr(attack, "universal", False):
        checks += [
            lambda: _black_box_stronger(attack, result, victim, x, y),
            lambda: _eps_large(attack, victim, x, y),
            lambda: _more_steps(attack, result, victim, x, y),
        ]
    return [w for check in checks if (w := check()) is not None]
