"""Result records: tensors for the caller, `to_dict()` of plain JSON types for files and the store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import Tensor, nn

from bastion.core import metrics
from bastion.core.threat import Access, ThreatModel

__all__ = [
    "AttackResult",
    "BitFlip",
    "BitFlipResult",
    "CurvePoint",
    "DetectionResult",
    "ExtractionResult",
    "OwnershipResult",
    "PoisonResult",
    "ProtectionResult",
    "perturbation_norms",
]


def perturbation_norms(x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """Per-sample L0 (changed values), L2 and L-inf norms of `x_adv - x`, each (N,)."""
    delta = (x_adv - x).flatten(1)
    return {
        "l0": (delta != 0).sum(dim=1),
        "l2": delta.norm(p=2, dim=1),
        "linf": delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0]),
    }


def _mean(t: Tensor) -> float:
    return float(t.double().mean()) if t.numel() else math.nan


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass(frozen=True, kw_only=True)
class AttackResult:
    """What an evasion attack did to a batch of N samples.

    Success is measured by querying the model on `x_adv` (never reported by the attack itself):
    untargeted, `y_adv != y`; targeted, `y_adv == target_labels`.

    Attributes:
        attack: the registered name of the attack.
        params: its hyperparameters (plain JSON types).
        threat: the threat model it ran under.
        access: what the attack saw of the model (`white-box`, `scores`, `label`); recorded as part of
            the threat model in `to_dict()`.
        seed: the seed of its generator.
        x_adv: adversarial inputs (N, C, H, W).
        y: true labels (N,).
        y_adv: the model's labels on `x_adv` (N,).
        clean_correct: whether the model classified the clean input correctly (N,).
        success: whether the attack succeeded on each sample (N,).
        queries: black-box queries spent per sample (N,); zeros for white-box attacks.
        l2, linf: perturbation norms per sample (N,).
        seconds: wall time of the attack.
        target_labels: the targets of a targeted attack (N,), else None.
        warnings: sanity-check findings that cast doubt on the numbers.
        extra: attack-specific records (per-stage accuracies, query curves ...), plain JSON types.
    """

    attack: str
    params: dict[str, Any]
    threat: ThreatModel
    access: Access
    seed: int
    x_adv: Tensor
    y: Tensor
    y_adv: Tensor
    clean_correct: Tensor
    success: Tensor
    queries: Tensor
    l2: Tensor
    linf: Tensor
    seconds: float
    target_labels: Tensor | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def clean_accuracy(self) -> float:
        return _mean(self.clean_correct)

    @property
    def robust_accuracy(self) -> float:
        """Share of all N samples still classified correctly on `x_adv`."""
        return _mean(self.y_adv == self.y)

    @property
    def success_rate(self) -> float:
        """Share of the samples classified correctly when clean on which the attack succeeded."""
        return _mean(self.success[self.clean_correct])

    def to_dict(self) -> dict[str, Any]:
        q = self.queries.double()
        attacked = self.clean_correct
        l2 = self.l2[attacked & self.success]
        return {
            "attack": self.attack,
            "params": dict(self.params),
            "threat": {**self.threat.to_dict(), "access": self.access},
            "seed": self.seed,
            "n": self.n,
            "clean_accuracy": _json_float(self.clean_accuracy),
            "robust_accuracy": _json_float(self.robust_accuracy),
            "success_rate": _json_float(self.success_rate),
            "seconds": self.seconds,
            "queries_mean": float(q.mean()) if q.numel() else None,
            "queries_median": float(q.quantile(0.5)) if q.numel() else None,
            "queries_max": int(self.queries.max()) if q.numel() else None,
            "linf_max": float(self.linf.max()) if self.linf.numel() else None,
            "l2_median": float(l2.double().quantile(0.5)) if l2.numel() else None,
            "warnings": list(self.warnings),
            "per_sample": {
                "y": self.y.tolist(),
                "y_adv": self.y_adv.tolist(),
                "success": self.success.tolist(),
                "queries": self.queries.tolist(),
                "l2": [round(v, 6) for v in self.l2.tolist()],
                "linf": [round(v, 6) for v in self.linf.tolist()],
                "target": None if self.target_labels is None else self.target_labels.tolist(),
            },
            "extra": dict(self.extra),
        }


@dataclass(frozen=True, kw_only=True)
class DetectionResult:
    """Scores that separate positives from negatives: a membership-inference attack's (positive = a
    member of the training set), an OOD detector's (positive = in-distribution), later backdoor
    detectors'. A higher score means "more likely positive"; the metrics come from the scores alone
    (`bastion.core.metrics`), so they never depend on a threshold the method picked.

    Attributes:
        method: the registered name of the attack or detector.
        params: its hyperparameters (plain JSON types).
        seed: the seed of its generator.
        scores: one score per sample (N,).
        positive: which samples are positives (N,).
        seconds: wall time.
        queries: model queries spent per sample (N,), for methods that query a model, else None.
        warnings: findings that cast doubt on the numbers.
        extra: method-specific records (plain JSON types).
    """

    method: str
    params: dict[str, Any]
    seed: int
    scores: Tensor
    positive: Tensor
    seconds: float
    queries: Tensor | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auroc(self) -> float:
        return metrics.auroc(self.scores, self.positive)

    def tpr_at_fpr(self, max_fpr: float) -> float:
        return metrics.tpr_at_fpr(self.scores, self.positive, max_fpr)

    def fpr_at_tpr(self, min_tpr: float) -> float:
        return metrics.fpr_at_tpr(self.scores, self.positive, min_tpr)

    @property
    def balanced_accuracy(self) -> float:
        return metrics.best_balanced_accuracy(self.scores, self.positive)

    def to_dict(self) -> dict[str, Any]:
        """The record: headline metrics, the ROC curve's corners and the per-sample scores."""
        fpr, tpr = metrics.roc_corners(self.scores, self.positive)
        n_pos = int(self.positive.sum())
        return {
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "n": int(self.scores.numel()),
            "n_positive": n_pos,
            "n_negative": int(self.scores.numel()) - n_pos,
            "auroc": self.auroc,
            "tpr_at_fpr_1e-3": self.tpr_at_fpr(1e-3),
            "tpr_at_fpr_1e-2": self.tpr_at_fpr(1e-2),
            "fpr95": self.fpr_at_tpr(0.95),
            "balanced_accuracy": self.balanced_accuracy,
            "seconds": self.seconds,
            "queries_max": None if self.queries is None else int(self.queries.max()),
            "warnings": list(self.warnings),
            "roc": {"fpr": fpr, "tpr": tpr},
            "per_sample": {
                "score": [round(v, 6) for v in self.scores.double().tolist()],
                "positive": self.positive.tolist(),
            },
            "extra": dict(self.extra),
        }


@dataclass(frozen=True, kw_only=True)
class PoisonResult:
    """What a poisoning attack got: the model trained on the poisoned set, measured on clean test images
    and on the same images triggered.

    Attributes:
        method: the registered name of the attack.
        params: its hyperparameters (rate, target, trigger settings; plain JSON types).
        seed: the seed that drew the poisoned images (and the trigger, where it is random).
        num_classes: K.
        poisoned_index: which training images were poisoned (P,), ascending.
        n_train: size of the training set.
        y: true labels of the test images (N,).
        pred: the poisoned model's labels on the clean test images (N,).
        movable: the test images the backdoor can move (N,): true class is not the backdoor's label.
        pred_triggered: its labels on those images triggered (M,).
        goal: the backdoor's label for each of them (M,).
        seconds: wall time of poisoning, training and measuring.
        warnings: findings that cast doubt on the numbers.
        extra: method-specific records (plain JSON types).
    """

    method: str
    params: dict[str, Any]
    seed: int
    num_classes: int
    poisoned_index: Tensor
    n_train: int
    y: Tensor
    pred: Tensor
    movable: Tensor
    pred_triggered: Tensor
    goal: Tensor
    seconds: float
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        return _mean(self.pred == self.y)

    @property
    def asr(self) -> float:
        """Triggered test images the model sends where the backdoor says, over those it can move."""
        return _mean(self.pred_triggered == self.goal)

    @property
    def asr_over_correct(self) -> float:
        """ASR over the movable images the model classifies correctly when clean."""
        correct = (self.pred == self.y)[self.movable]
        return _mean((self.pred_triggered == self.goal)[correct])

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "n_train": self.n_train,
            "n_poisoned": int(self.poisoned_index.numel()),
            "n_test": int(self.y.numel()),
            "n_triggered": int(self.goal.numel()),
            "clean_accuracy": _json_float(self.clean_accuracy),
            "asr": _json_float(self.asr),
            "asr_over_correct": _json_float(self.asr_over_correct),
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "poisoned_index": self.poisoned_index.tolist(),
            "per_sample": {
                "y": self.y.tolist(),
                "pred": self.pred.tolist(),
                "movable": self.movable.tolist(),
                "pred_triggered": self.pred_triggered.tolist(),
            },
            "extra": dict(self.extra),
        }


@dataclass(frozen=True, kw_only=True)
class ProtectionResult:
    """What protecting a training set did (unlearnable examples): the test accuracy of models trained from
    scratch on the protected set beside the same training on the clean set, per training regime, and the
    perturbation's size.

    Attributes:
        method: the registered name of the protection.
        params: its hyperparameters (plain JSON types).
        seed: the seed it ran with.
        n_train: images in the training set.
        n_protected: images the protection changed.
        linf: the largest L-inf norm of a perturbation.
        l2: the mean L2 norm of a perturbation over the protected images.
        l0_pixels: the most pixels (positions, all channels counted once) changed in one image.
        accuracy: per training regime (`standard`: the audited model's recipe; `adversarial`: the
            adversarial-training recipe), test accuracy of the model trained on the protected set.
        clean_accuracy: the same regimes trained on the clean set.
        n_test: test images measured.
        craft_seconds: wall time of crafting the protection.
        seconds: wall time of crafting, training and measuring.
        warnings: findings that cast doubt on the numbers.
        extra: method-specific records (plain JSON types).
    """

    method: str
    params: dict[str, Any]
    seed: int
    n_train: int
    n_protected: int
    linf: float
    l2: float
    l0_pixels: int
    accuracy: dict[str, float]
    clean_accuracy: dict[str, float]
    n_test: int
    craft_seconds: float
    seconds: float
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drop(self) -> dict[str, float]:
        """Per regime, the points of test accuracy the protection took (clean minus protected)."""
        return {k: self.clean_accuracy[k] - v for k, v in self.accuracy.items() if k in self.clean_accuracy}

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "n_train": self.n_train,
            "n_protected": self.n_protected,
            "linf": self.linf,
            "l2": self.l2,
            "l0_pixels": self.l0_pixels,
            "accuracy": dict(self.accuracy),
            "clean_accuracy": dict(self.clean_accuracy),
            "drop": self.drop,
            "n_test": self.n_test,
            "craft_seconds": self.craft_seconds,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "extra": dict(self.extra),
        }


class BitFlip(NamedTuple):
    """One flipped bit of an 8-bit weight: the layer (its module name), the weight's index in the
    flattened weight tensor, the bit (0 = least significant, 7 = the two's-complement sign bit), and
    the weight's int8 code before and after."""

    layer: str
    index: int
    bit: int
    before: int
    after: int


@dataclass(frozen=True, kw_only=True)
class BitFlipResult:
    """What a bit-flip attack did to an 8-bit quantized copy of a model.

    The accuracy is measured on evaluation images the attack never saw (its own attack batch, where it
    has one, is drawn elsewhere), by re-running the flipped model: never reported by the attack.

    Attributes:
        method: the registered name of the attack.
        params: its hyperparameters (plain JSON types).
        seed: the seed of its generator.
        layers: the quantized layers (module name -> number of weights), in module order.
        flips: the bits flipped, in order.
        accuracy: accuracy on the evaluation images of the quantized model before any flip, then after
            each flip (len(flips) + 1 values).
        curves: what the attack measures besides the accuracy, at the same points (a targeted attack's
            `asr`, its `other_accuracy`).
        loss: the attack's loss on its attack batch before any flip, then after each flip (same
            length as `accuracy`); None for an attack without an objective (random flips).
        float_accuracy: accuracy of the original (float) model on the same images.
        hamming: bits that differ between the original and the attacked int8 weights; equals the number
            of flips unless a bit was flipped twice.
        n_eval: evaluation images.
        n_attack: images in the attack batch (0 for an attack that needs none).
        stop: why the attack stopped: `max_flips`, `target_accuracy` or `no_gain` (no flip within the
            budget raises the attack's objective).
        seconds: wall time of quantization, attack and measurement.
        warnings: findings that cast doubt on the numbers.
        extra: method-specific records (plain JSON types).
    """

    method: str
    params: dict[str, Any]
    seed: int
    layers: dict[str, int]
    flips: tuple[BitFlip, ...]
    accuracy: tuple[float, ...]
    loss: tuple[float, ...] | None
    float_accuracy: float
    hamming: int
    n_eval: int
    n_attack: int
    stop: str
    seconds: float
    curves: dict[str, tuple[float, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def quantized_accuracy(self) -> float:
        """Accuracy of the 8-bit model before any flip."""
        return self.accuracy[0]

    @property
    def final_accuracy(self) -> float:
        """Accuracy after the last flip."""
        return self.accuracy[-1]

    @property
    def n_flips(self) -> int:
        return len(self.flips)

    @property
    def bits_total(self) -> int:
        """Bits of the quantized weights: what the attacker could have flipped."""
        return 8 * sum(self.layers.values())

    def flips_to(self, accuracy: float) -> int | None:
        """The fewest flips after which the accuracy was at most `accuracy` (None when never)."""
        return next((i for i, a in enumerate(self.accuracy) if a <= accuracy), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "n_eval": self.n_eval,
            "n_attack": self.n_attack,
            "float_accuracy": self.float_accuracy,
            "quantized_accuracy": self.quantized_accuracy,
            "accuracy": self.final_accuracy,
            "flips": self.n_flips,
            "hamming": self.hamming,
            "bits_total": self.bits_total,
            "stop": self.stop,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "layers": dict(self.layers),
            **{k: _json_float(v[-1]) for k, v in self.curves.items()},
            "accuracy_curve": list(self.accuracy),
            "curves": {k: [_json_float(x) for x in v] for k, v in self.curves.items()},
            "loss_curve": None if self.loss is None else [v if math.isfinite(v) else None for v in self.loss],
            "bit_flips": [f._asdict() for f in self.flips],
            "extra": dict(self.extra),
        }


class CurvePoint(NamedTuple):
    """A surrogate measured part-way through an extraction: after `queries` answered queries, its
    accuracy on the test images and its fidelity (label agreement with the victim on them)."""

    queries: int
    accuracy: float
    fidelity: float


@dataclass(frozen=True, kw_only=True)
class ExtractionResult:
    """What a model-extraction attack got from a black-box API: a surrogate, measured against the victim.

    Accuracy and fidelity are measured on test images the attacker never queried, by running both
    models on them (a measurement, not queries: the API's budget pays only for the attacker's own
    queries). The transfer attack is crafted white-box on the surrogate and the victim's labels on the
    result are measured the same way.

    Attributes:
        method: the registered name of the attack.
        params: its hyperparameters (plain JSON types).
        seed: the seed of its generator.
        output: what the API answered (`probs`, `top-k`, `label`).
        defenses: the output defenses the API ran, by name (as the caller named them).
        budget: the total query budget.
        queries: queries the API answered (never more than `budget`).
        surrogate: how the surrogate was built (architecture, initialisation, training settings).
        transfer_set: where the attacker's images came from (the pool, the seed set).
        y: true labels of the test images (N,).
        victim_pred: the victim's labels on them (N,).
        surrogate_pred: the final surrogate's labels on them (N,).
        curve: the surrogate measured at checkpoints, in query order (the last is the final surrogate).
        transfer: the transfer attack's record (`eps`, `n` attacked, `success_rate` on the victim,
            `surrogate_success_rate`, `noise_success_rate` of random +-eps signs), or None when not run.
        seconds: wall time of the extraction (queries and training) and measurement.
        attack_seconds: the part of it the attack itself took (queries and training), without the
            measurements of the model and the copies on the test images and the transfer attack.
        model: the surrogate itself, in eval mode (not part of `to_dict()`).
        warnings: findings that cast doubt on the numbers.
        extra: method-specific records (plain JSON types).
    """

    method: str
    params: dict[str, Any]
    seed: int
    output: str
    defenses: tuple[str, ...]
    budget: int
    queries: int
    surrogate: dict[str, Any]
    transfer_set: dict[str, Any]
    y: Tensor
    victim_pred: Tensor
    surrogate_pred: Tensor
    curve: tuple[CurvePoint, ...]
    transfer: dict[str, Any] | None
    seconds: float
    attack_seconds: float
    model: nn.Module | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """The surrogate's accuracy on the test images."""
        return _mean(self.surrogate_pred == self.y)

    @property
    def victim_accuracy(self) -> float:
        return _mean(self.victim_pred == self.y)

    @property
    def fidelity(self) -> float:
        """Share of the test images on which the surrogate gives the victim's label."""
        return _mean(self.surrogate_pred == self.victim_pred)

    @property
    def transfer_success_rate(self) -> float | None:
        return None if self.transfer is None else self.transfer["success_rate"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "output": self.output,
            "defenses": list(self.defenses),
            "budget": self.budget,
            "queries": self.queries,
            "n_test": int(self.y.numel()),
            "accuracy": _json_float(self.accuracy),
            "victim_accuracy": _json_float(self.victim_accuracy),
            "fidelity": _json_float(self.fidelity),
            "transfer_success_rate": self.transfer_success_rate,
            "seconds": self.seconds,
            "attack_seconds": self.attack_seconds,
            "warnings": list(self.warnings),
            "surrogate": dict(self.surrogate),
            "transfer_set": dict(self.transfer_set),
            "curve": [p._asdict() for p in self.curve],
            "transfer": None if self.transfer is None else dict(self.transfer),
            "per_sample": {
                "y": self.y.tolist(),
                "victim_pred": self.victim_pred.tolist(),
                "surrogate_pred": self.surrogate_pred.tolist(),
            },
            "extra": dict(self.extra),
        }


@dataclass(frozen=True, kw_only=True)
class OwnershipResult:
    """An ownership check of one suspect model: the evidence that it derives from the owner's model or data.

    A small p-value is evidence of ownership; the claim is made when it falls below `alpha`.

    Attributes:
        method: the registered name of the ownership method (`watermark`, `blackmarks`, `dataset-inference`).
        params: its hyperparameters (plain JSON types).
        seed: the seed of its generator.
        statistic: the method's test statistic: the share of watermark keys the suspect labels as the
            owner's key says (`watermark`), the share of signature bits it returns (`blackmarks`), the
            Welch t statistic of the regressor's scores, public over private (`dataset-inference`).
        p_value: the probability of evidence at least this strong from a model independent of the owner's.
        alpha: the significance level of the claim.
        queries: queries the suspect answered, per probe (N,): key images, or points walked.
        seconds: wall time of the check.
        n: the sample behind the statistic: key images, signature bits, or points per side.
        matches: keys labelled as the key says, or bits returned right (None for dataset inference).
        p0: the agreement rate of an independent model under the null (None where it does not apply).
        interval: a two-sided 95% Clopper-Pearson interval on the agreement rate (None where it does not apply).
        ber: the bit error rate of an extracted signature (`blackmarks`; None otherwise).
        within_tolerance: whether the method's own threshold on its statistic is met (a BER at most the
            tolerance); the claim needs it and p < `alpha`.
        clean_accuracy: the suspect's accuracy on the test images it was given (None without them).
        warnings: findings that cast doubt on the numbers.
        extra: method-specific records (plain JSON types).
    """

    method: str
    params: dict[str, Any]
    seed: int
    statistic: float
    p_value: float
    alpha: float
    queries: Tensor
    seconds: float
    n: int
    matches: int | None = None
    p0: float | None = None
    interval: tuple[float, float] | None = None
    ber: float | None = None
    within_tolerance: bool = True
    clean_accuracy: float | None = None
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def claimed(self) -> bool:
        """Whether the evidence supports the ownership claim at level `alpha`."""
        return self.p_value < self.alpha and self.within_tolerance

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": dict(self.params),
            "seed": self.seed,
            "statistic": self.statistic if math.isfinite(self.statistic) else None,
            "p_value": self.p_value,
            "log10_p_value": math.log10(self.p_value) if self.p_value > 0 else None,
            "alpha": self.alpha,
            "claimed": self.claimed,
            "n": self.n,
            "matches": self.matches,
            "p0": self.p0,
            "interval": None if self.interval is None else list(self.interval),
            "ber": self.ber,
            "within_tolerance": self.within_tolerance,
            "clean_accuracy": self.clean_accuracy,
            "queries": int(self.queries.sum()),
            "queries_max": int(self.queries.max()) if self.queries.numel() else 0,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "extra": dict(self.extra),
        }
