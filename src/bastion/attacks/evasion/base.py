"""The evasion-attack contract. `EvasionAttack.run` is final: it checks the inputs, seeds the generator, hands the
subclass a `Victim` (white-box) or an `Oracle` (black-box) according to the declared `access`,
re-queries the model on the result, asserts the ball and the bounds, and fills the `AttackResult`.
A subclass implements `_perturb` and nothing else can skip these steps.

Evasion attacks are frozen, keyword-only dataclasses: each field declared with `param` is a
hyperparameter with the paper's default (see `bastion.core.params`); `seed` comes from `Attack`, the
family-neutral base, and `threat` from this one.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, final

import torch
from torch import Tensor

from bastion.attacks.base import Attack
from bastion.attacks.evasion._trace import QueryTrace
from bastion.core.errors import ConfigError, DataError
from bastion.core.ops import in_ball, project
from bastion.core.oracle import BlackBoxModel, OutputMode, PostProcessor
from bastion.core.progress import ProgressFn
from bastion.core.random import make_generator
from bastion.core.results import AttackResult, perturbation_norms
from bastion.core.threat import Norm, ThreatModel
from bastion.core.victim import Victim

__all__ = ["EvasionAttack", "RunContext"]


@dataclass
class RunContext:
    """Per-run state handed to `_perturb`: the seeded generator, targets, progress and records to fill.

    Attributes:
        gen: the run's generator, on the victim's device; every random draw comes from it.
        target_labels: (N,) targets of a targeted attack, else None.
        progress: where to report progress (None: nobody listens).
        extra: attack-specific records for the result (plain JSON types).
        warnings: findings that cast doubt on the numbers.
        n_total: the number of samples of the whole run, attacked or not (for records relative to it).
        trace: query-efficiency records of a black-box attack (None for white-box attacks); the
            attack reports each adversarial input it finds, `run` turns them into curves.
    """

    gen: torch.Generator
    target_labels: Tensor | None = None
    progress: ProgressFn | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_total: int = 0
    trace: QueryTrace | None = None


@dataclass(frozen=True, kw_only=True)
class EvasionAttack(Attack, ABC):
    """Base of every evasion attack.

    Class attributes a subclass sets:
        access: `white-box` (gets a `Victim`), `scores` or `label` (gets an `Oracle`); recorded with
            each result as the threat model's access.
        norms: the norms the attack supports.
        oracle_output: what the oracle answers for a black-box attack (`logits`, `probs`, `label`).
        targeted_ok: whether the attack can aim at given target labels.
        universal: whether the attack fits one perturbation for all images (`uap`, `fg-uap`); `run` then
            hands it every image, misclassified ones included, as the universal-perturbation papers
            apply v to every image (see `_universal.py`).
    """

    family: ClassVar[str] = "evasion"
    norms: ClassVar[tuple[Norm, ...]] = ("linf", "l2")
    oracle_output: ClassVar[OutputMode] = "logits"
    targeted_ok: ClassVar[bool] = True
    universal: ClassVar[bool] = False

    threat: ThreatModel = field(default_factory=ThreatModel)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.threat.norm not in self.norms:
            raise ConfigError(f"{self.name} supports the {' and '.join(self.norms)} norms; got {self.threat.norm!r}")
        if self.threat.targeted and not self.targeted_ok:
            raise ConfigError(f"{self.name} is untargeted; drop targeted=True")

    @abstractmethod
    def _perturb(self, target: Any, x: Tensor, y: Tensor, ctx: RunContext) -> Tensor:
        """Return adversarial inputs (N, C, H, W) for the samples (x, y) handed in: the clean-correct ones,
        or every sample for a universal attack.

        `target` is a `Victim` for white-box attacks and an `Oracle` for the others.
        """

    @final
    def perturb(
        self, victim: Victim, x: Tensor, y: Tensor, *, gen: torch.Generator, target_labels: Tensor | None = None
    ) -> Tensor:
        """Adversarial inputs for every sample of (x, y), projected, without measuring anything.

        For training loops (adversarial training), which attack every sample of a batch with the
        loop's own generator and need no `AttackResult`. White-box attacks only.
        """
        if self.access != "white-box":
            raise ConfigError(f"{self.name} is a black-box attack; perturb() serves white-box attacks")
        ctx = RunContext(gen=gen, target_labels=target_labels, n_total=x.shape[0])
        x_adv = self._perturb(victim, x, y, ctx).detach()
        return project(x_adv, x, self.threat.norm, self.threat.eps, self.threat.bounds)

    @final
    def run(
        self,
        victim: Victim | BlackBoxModel,
        x: Tensor,
        y: Tensor,
        *,
        target_labels: Tensor | None = None,
        progress: ProgressFn | None = None,
        postprocess: Sequence[PostProcessor] = (),
    ) -> AttackResult:
        """Attack the batch (x, y) and measure what happened.

        Only the samples the model classifies correctly (for a targeted attack: not already as the
        target) are attacked; the others keep `x_adv = x`. A universal attack (one perturbation for all
        images) is the exception: every sample gets it, so `robust_accuracy` is the accuracy under it.

        A black-box attack may run on a model known only by its answers (`BlackBoxModel`: an ONNX file,
        an HTTP endpoint); the clean predictions and the final re-check are then the evaluator's own
        queries, outside the attacker's budget, as they are for an in-process model.

        Args:
            victim: the model under attack: a `Victim`, or for a black-box attack a `BlackBoxModel`.
            x: inputs (N, C, H, W) inside the victim's bounds.
            y: true labels (N,).
            target_labels: (N,) targets, required when the threat model is targeted.
            progress: a callback for progress events.
            postprocess: output defenses the oracle of a black-box attack applies (ignored by white-box
                attacks, which see the model itself).
        """
        if self.access == "white-box" and not isinstance(victim, Victim):
            raise ConfigError(
                f"{self.name} is a white-box attack and needs the model's gradients, but this model answers queries "
                "only; run a score-based (e.g. square) or decision-based (e.g. hsja) attack"
            )
        victim.check_input(x)
        if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"labels must be a tensor (N,) with N = {x.shape[0]}; got {getattr(y, 'shape', y)}")
        if tuple(self.threat.bounds) != tuple(victim.bounds):
            raise ConfigError(f"threat model bounds {self.threat.bounds} differ from the victim's {victim.bounds}")
        if self.threat.targeted:
            if target_labels is None or target_labels.shape != y.shape:
                raise ConfigError(f"{self.name}: a targeted threat model needs target_labels of shape (N,)")
            target_labels = target_labels.to(victim.device, torch.long)
        elif target_labels is not None:
            raise ConfigError(f"{self.name}: target_labels given but the threat model is untargeted")
        dev = victim.device
        x, y = x.to(dev), y.to(dev, torch.long)
        start = time.perf_counter()
        clean_pred = victim.predict(x)  # (N,)
        k = victim.num_classes
        if y.numel() and (y.min() < 0 or y.max() >= k):
            raise DataError(f"labels must lie in [0, {k}); got [{y.min().item()}, {y.max().item()}]")
        clean_correct = clean_pred == y
        if self.universal:  # untargeted by construction (targeted_ok is False)
            attack_mask = torch.ones_like(clean_correct)
        else:
            attack_mask = clean_correct if target_labels is None else clean_correct & (target_labels != y)
        ctx = RunContext(
            gen=make_generator(self.seed, dev),
            target_labels=None if target_labels is None else target_labels[attack_mask],
            progress=progress,
            n_total=x.shape[0],
        )
        idx = attack_mask.nonzero().squeeze(1)
        x_adv = x.clone()
        queries = torch.zeros(x.shape[0], dtype=torch.long, device=dev)
        if idx.numel():
            if self.access == "white-box":
                assert isinstance(victim, Victim)
                x_adv[idx] = self._perturb(victim, x[idx], y[idx], ctx).detach()
            else:
                oracle = victim.oracle(
                    idx.numel(),
                    output=self._oracle_output(),
                    postprocess=postprocess,
                    max_queries=self.threat.max_queries,
                )
                ctx.trace = QueryTrace(idx.numel(), self.threat.eps, dev)
                x_adv[idx] = self._perturb(oracle, x[idx], y[idx], ctx).detach()
                queries[idx] = oracle.queries
                ctx.extra.update(ctx.trace.to_extra(idx, x.shape[0], int(queries.max())))
        # the projection is the very last operation on x_adv; the check below is an invariant, not a filter
        x_adv = project(x_adv, x, self.threat.norm, self.threat.eps, self.threat.bounds)
        inside = in_ball(x_adv, x, self.threat.norm, self.threat.eps, self.threat.bounds)
        if not bool(inside.all()):  # pragma: no cover - a bug in the projection, never a user error
            raise AssertionError(f"{self.name}: x_adv left the {self.threat.norm} ball or the bounds")
        y_adv = victim.predict(x_adv)  # success is measured, never reported by the attack
        success = y_adv == target_labels if target_labels is not None else y_adv != y
        seconds = time.perf_counter() - start
        norms = perturbation_norms(x, x_adv)
        return AttackResult(
            attack=self.name,
            params=self.params(),
            threat=self.threat,
            access=self.access,
            seed=self.seed,
            x_adv=x_adv,
            y=y,
            y_adv=y_adv,
            clean_correct=clean_correct,
            success=success,
            queries=queries,
            l2=norms["l2"],
            linf=norms["linf"],
            seconds=seconds,
            target_labels=target_labels,
            warnings=tuple(ctx.warnings),
            extra=ctx.extra,
        )

    def _oracle_output(self) -> OutputMode:
        return "label" if self.access == "label" else self.oracle_output
