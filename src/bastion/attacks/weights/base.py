"""The bit-flip contract. `BitFlipAttack.run` is final: it quantizes a copy of the model to 8 bits
(`quantize_int8`; the caller's model is never touched), measures the float and the 8-bit accuracy on
the evaluation images, then asks the subclass for bits to flip (`_step`), flips them one at a time
and measures the accuracy (and the subclass's own measures, `_curves`) after each, until the budget
(`max_flips`) is spent, the subclass's goal is met (`_goal`: a target accuracy, a success rate), or
the subclass finds nothing worth flipping. The Hamming distance between the
original and the attacked codes is counted from the codes themselves, not from the flips proposed.

Threat model (Rakin et al., ICCV 2019): a white-box attacker who knows the weights and can flip bits
of them in memory (row-hammer, laser fault injection); the budget is the number of bits flipped.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, final

import torch
from torch import Tensor

from bastion.attacks.base import Attack
from bastion.attacks.weights.quantize import QuantizedModel, quantize_int8
from bastion.core.errors import DataError
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report
from bastion.core.random import make_generator
from bastion.core.results import BitFlip, BitFlipResult
from bastion.core.threat import Access
from bastion.core.victim import Victim

__all__ = ["QUANTIZATION_TOLERANCE", "AttackBatch", "BitFlipAttack", "Proposal"]

# The papers' 8-bit models lose under half a point to quantization; more is worth a warning.
QUANTIZATION_TOLERANCE = 0.005

Proposal = list[tuple[str, int, int]]  # bits to flip next: (layer, flat weight index, bit)


@dataclass(frozen=True)
class AttackBatch:
    """The images an attack computes its loss on, drawn once, and the labels it uses for them."""

    x: Tensor  # (M, C, H, W)
    y: Tensor  # (M,)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, kw_only=True)
class BitFlipAttack(Attack, ABC):
    """Base of the weight bit-flip attacks (family `bitflip`).

    A subclass sets `needs_attack_images` (and `needs_attack_labels`) when it needs images of its own
    (an attack batch, which must not be the evaluation images) and implements `_prepare` (state drawn
    once: the attack batch and its labels) and `_step` (the next bits to flip). `_objective` is the
    loss it drives, recorded after every flip; `_curves` what it measures besides the accuracy;
    `_goal` when it is done.

    `quantization` picks the step of the 8-bit grid (`quantize_int8`): `bfa`, `max|W| / 127` (the BFA
    reference), or `tbfa`, `2 max|W| / 127` (the T-BFA reference's headroom: codes within +-64).
    """

    family: ClassVar[str] = "bitflip"
    access: ClassVar[Access] = "white-box"
    needs_attack_images: ClassVar[bool] = False
    needs_attack_labels: ClassVar[bool] = False

    max_flips: int = param(20, ge=1, help="the budget: bits flipped at most")
    quantization: Literal["bfa", "tbfa"] = param(
        "bfa", help="8-bit step per layer: bfa, max|W|/127; tbfa, 2 max|W|/127 (headroom)"
    )

    @abstractmethod
    def _prepare(
        self, q: QuantizedModel, victim: Victim, x_attack: Tensor | None, y_attack: Tensor | None, gen: torch.Generator
    ) -> object:
        """State drawn once before the first flip (the attack batch and its labels), passed to `_step`."""

    @abstractmethod
    def _step(self, q: QuantizedModel, state: object, budget: int, gen: torch.Generator) -> Proposal:
        """The next bits to flip, at most `budget` of them; an empty list stops the attack (no gain)."""

    def _objective(self, q: QuantizedModel, state: object) -> float | None:
        """The attack's loss in the current state of `q` (None for an attack without one)."""
        return None

    def _extra(self, q: QuantizedModel, state: object) -> dict[str, object]:
        """Method-specific records (plain JSON types)."""
        return {}

    def _curves(self, pred: Tensor, y: Tensor) -> dict[str, float]:
        """What the attack measures besides the accuracy, from the predictions (N,) on the evaluation
        images and their labels (N,), after every flip (a targeted attack's success rate)."""
        return {}

    def _goal(self, accuracy: list[float], curves: dict[str, list[float]]) -> str | None:
        """Why the attack should stop now, given everything measured so far (None: go on)."""
        return None

    @final
    def run(
        self,
        victim: Victim,
        x_eval: Tensor,
        y_eval: Tensor,
        *,
        x_attack: Tensor | None = None,
        y_attack: Tensor | None = None,
        progress: ProgressFn | None = None,
    ) -> BitFlipResult:
        """Flip bits of an 8-bit copy of `victim`'s model and measure its accuracy after each flip.

        Args:
            victim: the model; its weights are copied, never changed.
            x_eval: evaluation images (N, C, H, W) inside the victim's bounds: the accuracy is measured
                on them. They must not be the attack images.
            y_eval: their labels (N,).
            x_attack: images the attacker holds (M, C, H, W), for attacks that need them (`bfa` draws
                its attack batch from them and labels it with the model's own predictions).
            y_attack: their labels (M,), for attacks that need them (`t-bfa` picks the source class).
            progress: called after each flip.
        """
        victim.check_input(x_eval)
        n = x_eval.shape[0]
        if n < 1 or not isinstance(y_eval, Tensor) or y_eval.shape != (n,):
            raise DataError(f"evaluation labels must be a tensor (N,) with N = {n} >= 1 images")
        if self.needs_attack_images:
            if x_attack is None:
                raise DataError(f"{self.name} needs images of its own to attack with: pass x_attack")
            victim.check_input(x_attack)
        if self.needs_attack_labels and (
            not isinstance(y_attack, Tensor) or x_attack is None or y_attack.shape != (x_attack.shape[0],)
        ):
            raise DataError(f"{self.name} needs the labels of its attack images: pass y_attack, a tensor (M,)")
        start = time.perf_counter()
        x_eval, y_eval = x_eval.to(victim.device), y_eval.to(victim.device, torch.long)
        q = quantize_int8(victim.model, scheme=self.quantization)
        quantized = victim.like(q.model)

        acc: list[float] = []
        curves: dict[str, list[float]] = {}

        def measure() -> None:
            pred = quantized.predict(x_eval)
            acc.append(float((pred == y_eval).double().mean()))
            for k, v in self._curves(pred, y_eval).items():
                curves.setdefault(k, []).append(v)

        float_accuracy = float((victim.predict(x_eval) == y_eval).double().mean())
        gen = make_generator(self.seed)
        on_device = [None if t is None else t.to(victim.device) for t in (x_attack, y_attack)]
        state = self._prepare(q, quantized, on_device[0], on_device[1], gen)
        measure()
        losses = [self._objective(q, state)]
        flips: list[BitFlip] = []
        steps: list[int] = []  # flips committed per step (BFA's progressive n)
        stop = "max_flips"
        while len(flips) < self.max_flips:
            if reason := self._goal(acc, curves):
                stop = reason
                break
            proposal = self._step(q, state, self.max_flips - len(flips), gen)
            if not proposal:
                stop = "no_gain"
                break
            assert len(proposal) <= self.max_flips - len(flips), "a step may not overspend the budget"
            steps.append(len(proposal))
            for layer, index, bit in proposal:
                flips.append(q.flip(layer, index, bit))
                measure()
                losses.append(self._objective(q, state))
                report(progress, self.name, len(flips), self.max_flips, accuracy=acc[-1])
        if stop == "max_flips" and (reason := self._goal(acc, curves)):
            stop = reason
        warnings = []
        if float_accuracy - acc[0] > QUANTIZATION_TOLERANCE:
            warnings.append(
                f"8-bit quantization alone costs {100 * (float_accuracy - acc[0]):.1f} points of accuracy on "
                "these images (the papers' models lose under 0.5): the attack starts from a weaker model"
            )
        if stop == "no_gain":
            warnings.append(
                f"{self.name} stopped after {len(flips)} of {self.max_flips} flips: no bit it ranks raises its "
                "loss any more"
            )
        loss = None if any(v is None for v in losses) else tuple(float(v) for v in losses if v is not None)
        n_attack = state.n if isinstance(state, AttackBatch) else 0
        return BitFlipResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            layers={name: layer.numel for name, layer in q.layers.items()},
            flips=tuple(flips),
            accuracy=tuple(acc),
            curves={k: tuple(v) for k, v in curves.items()},
            loss=loss,
            float_accuracy=float_accuracy,
            hamming=q.hamming(),
            n_eval=n,
            n_attack=n_attack,
            stop=stop,
            seconds=time.perf_counter() - start,
            warnings=tuple(warnings),
            extra={"steps": steps, **self._extra(q, state)},
        )
