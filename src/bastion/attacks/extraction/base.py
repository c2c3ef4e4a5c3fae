"""The model-extraction contract. `ExtractionAttack.run` is final: it puts the victim behind a black-box
API with one total query budget (an `Oracle` with `n=1`, see `bastion.core.oracle`), hands the
subclass that API, the attacker's own images and a way to build fresh surrogates, and measures the
surrogate it returns against the victim on test images the attacker never queried: accuracy,
fidelity (label agreement with the victim) and the success of adversarial examples crafted on the
surrogate and sent to the victim (the transfer attack an extracted model enables).

Threat model (Tramèr et al., USENIX Security 2016; Orekondy et al., CVPR 2019; Papernot et al.,
AsiaCCS 2017): the attacker knows the task's input shape and classes, picks an architecture (by default
the victim's), holds images of its own (another distribution, or a few in-distribution seeds) and may
send at most B queries to the API, which answers probabilities, the top-k of them or the label only,
possibly through an output defense. It never sees the victim's weights, gradients or training data.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.attacks.evasion.pgd import PGD
from bastion.core.errors import ConfigError, DataError
from bastion.core.ops import batch_slices
from bastion.core.oracle import Oracle, OutputMode, PostProcessor
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report
from bastion.core.random import make_generator, seed_everything
from bastion.core.results import CurvePoint, ExtractionResult
from bastion.core.threat import Access, ThreatModel
from bastion.core.victim import Victim
from bastion.train import Hooks, TrainConfig, fit

__all__ = ["ExtractionAttack", "ExtractionContext", "SurrogateFactory", "default_transfer_eps", "soft_cross_entropy"]

SurrogateFactory = Callable[[], nn.Module]  # a fresh, untrained surrogate (seeded by the caller)

QUERY_BATCH = 256  # rows per query sent to the API (the count is per row either way)


def default_transfer_eps(channels: int) -> float:
    """The audit's usual L-inf radius for a data set: 0.3 for grey digits, 8/255 for colour images."""
    return 0.3 if channels == 1 else 8 / 255


def soft_cross_entropy(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """`-sum_k p_k log softmax(F(x))_k`, averaged over the batch, for targets (B, K) that are the API's
    probabilities, its top-k values with zeros elsewhere (not renormalised), or one-hot labels
    (Knockoff Nets' `soft_cross_entropy`, `knockoff/utils/model.py`)."""
    return -(target * F.log_softmax(model(x), dim=1)).sum(dim=1).mean()


@dataclass
class ExtractionContext:
    """What `_extract` works with: the API, the surrogate factory, the training and the records.

    Attributes:
        oracle: the API; every row costs one query of the total budget (`ask`).
        gen: the run's generator; every random draw comes from it.
        num_classes: K.
        build: a fresh, untrained surrogate on the victim's device, seeded with the attack's seed (the
            same initial weights at every call).
        measure: (accuracy, fidelity) of a surrogate on the test images (used by `record`).
        progress: where to report progress.
        curve: surrogates measured so far (`record`).
        warnings: findings that cast doubt on the numbers.
        extra: attack-specific records (plain JSON types).
    """

    oracle: Oracle
    gen: torch.Generator
    num_classes: int
    build: Callable[[], nn.Module]
    measure: Callable[[nn.Module], tuple[float, float]]
    progress: ProgressFn | None = None
    curve: list[CurvePoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def used(self) -> int:
        """Queries answered so far."""
        return int(self.oracle.queries[0])

    @property
    def left(self) -> int:
        """Queries the budget still allows."""
        return int(self.oracle.remaining()[0])

    def ask(self, x: Tensor) -> Tensor:
        """The API's answers to the images x (M, C, H, W), in batches; each row costs one query and a
        query past the budget raises `QueryBudgetExceeded` before anything is answered."""
        x = x.to(self.oracle.device)
        out = []
        for s in batch_slices(x.shape[0], QUERY_BATCH):
            rows = x[s]
            out.append(self.oracle.query(rows, torch.zeros(rows.shape[0], dtype=torch.long)))
        return torch.cat(out) if out else torch.zeros(0, device=self.oracle.device)

    def targets(self, answers: Tensor) -> Tensor:
        """Training targets (M, K) from the API's answers: its probabilities (top-k: the k values, zeros
        elsewhere, as answered) or the one-hot of its labels."""
        if self.oracle.output == "label":
            return F.one_hot(answers, self.num_classes).float()
        return answers.float()

    def record(self, model: nn.Module) -> CurvePoint:
        """Measure `model` now (accuracy and fidelity on the test images) as a point of the curve."""
        accuracy, fidelity = self.measure(model)
        point = CurvePoint(self.used, accuracy, fidelity)
        self.curve.append(point)
        report(self.progress, "extraction", self.used, self.oracle.max_queries or 0, fidelity=fidelity)
        return point


@dataclass(frozen=True, kw_only=True)
class ExtractionAttack(Attack, ABC):
    """Base of the model-extraction attacks (family `extraction`).

    A subclass implements `_extract`: query the API within the budget, train a surrogate and return it.
    The surrogate training settings below are `bastion.train.fit`'s, with the soft cross-entropy of
    the API's answers as the loss (one-hot targets for a label-only API).
    """

    family: ClassVar[str] = "extraction"
    access: ClassVar[Access] = "scores"
    needs_pool_labels: ClassVar[bool] = False

    budget: int = param(2000, ge=1, help="the total query budget: images the API answers at most")
    epochs: int = param(30, ge=1, help="surrogate training epochs")
    batch_size: int = param(64, ge=1, help="surrogate training batch size")
    optimizer: Literal["adam", "sgd"] = param("adam", help="surrogate optimiser: adam or sgd")
    lr: float = param(3e-3, gt=0, help="surrogate peak learning rate")
    schedule: Literal["onecycle", "cosine", "constant"] = param("onecycle", help="learning-rate schedule")
    augment: Literal["none", "shift", "crop-flip"] = param("none", help="surrogate training augmentation")
    transfer_n: int = param(200, ge=0, help="test images attacked by the transfer attack (0: none)")
    transfer_eps: float | None = param(None, gt=0, help="its L-inf radius; default 0.3 (grey) or 8/255 (colour)")

    @abstractmethod
    def _extract(self, ctx: ExtractionContext, x_pool: Tensor, y_pool: Tensor | None) -> nn.Module:
        """Query the API (`ctx.ask`) within the budget, train and return the surrogate (eval mode),
        recording points of the curve (`ctx.record`) on the way; the last recorded point must be the
        returned surrogate's."""

    def _extra(self) -> dict[str, Any]:
        return {}

    def train_config(self, epochs: int | None = None) -> TrainConfig:
        """The surrogate's optimisation settings."""
        return TrainConfig(
            epochs=epochs or self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=0.5 if self.optimizer == "sgd" else 0.9,
            schedule=self.schedule,
            augment=self.augment,
            seed=self.seed,
        )

    def train(self, model: nn.Module, x: Tensor, targets: Tensor, *, epochs: int | None = None) -> nn.Module:
        """Train `model` in place on (x, targets (M, K)) with the soft cross-entropy; returned in eval mode."""
        fit(model, x, targets, self.train_config(epochs), hooks=Hooks(loss=soft_cross_entropy))
        return model.eval()

    @final
    def run(
        self,
        victim: Victim,
        surrogate: SurrogateFactory,
        x_pool: Tensor,
        y_pool: Tensor | None,
        x_test: Tensor,
        y_test: Tensor,
        *,
        output: OutputMode = "probs",
        k: int | None = None,
        postprocess: Sequence[PostProcessor] = (),
        defenses: Sequence[str] = (),
        surrogate_info: dict[str, Any] | None = None,
        pool_info: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
    ) -> ExtractionResult:
        """Extract a surrogate of `victim` through a black-box API and measure it.

        Args:
            victim: the model behind the API; the attack sees it only through the API.
            surrogate: builds a fresh, untrained surrogate (called after seeding the global generators
                with the attack's seed, so its initial weights are reproducible).
            x_pool: the attacker's own images (P, C, H, W) inside the victim's bounds.
            y_pool: their labels (P,) where the attacker has them (the adaptive policy's classes, JBDA's
                seed labels), else None.
            x_test: test images (N, C, H, W) the attacker never queries: accuracy, fidelity and the
                transfer attack are measured on them.
            y_test: their labels (N,).
            output: what the API answers: `probs`, `top-k` or `label`.
            k: the classes shown in `top-k` mode.
            postprocess: output defenses the API applies to its logits.
            defenses: their names, for the record.
            surrogate_info: how the surrogate is built, for the record (architecture, initialisation).
            pool_info: where the pool comes from, for the record.
            progress: called as surrogates are measured.
        """
        if output not in ("probs", "top-k", "label"):
            raise ConfigError(f"{self.name}: the API must answer probs, top-k or label; got {output!r}")
        victim.check_input(x_pool)
        victim.check_input(x_test)
        n, p = x_test.shape[0], x_pool.shape[0]
        if n < 1 or not isinstance(y_test, Tensor) or y_test.shape != (n,):
            raise DataError(f"test labels must be a tensor (N,) with N = {n} >= 1 images")
        if p < 1:
            raise DataError(f"{self.name} needs images of its own to query: the pool is empty")
        if y_pool is not None and (not isinstance(y_pool, Tensor) or y_pool.shape != (p,)):
            raise DataError(f"pool labels must be a tensor (P,) with P = {p} images")
        if self.needs_pool_labels and y_pool is None:
            raise DataError(f"{self.name} needs the labels of its pool images: pass y_pool, a tensor (P,)")
        start = time.perf_counter()
        dev = victim.device
        x_test, y_test = x_test.to(dev), y_test.to(dev, torch.long)
        victim_pred = victim.predict(x_test)  # a measurement, not a query: the budget pays for none of it

        measuring = [time.perf_counter() - start]  # seconds spent measuring, not attacking

        def measure(model: nn.Module) -> tuple[float, float]:
            t0 = time.perf_counter()
            pred = victim.like(model).predict(x_test)
            measuring[0] += time.perf_counter() - t0
            return float((pred == y_test).double().mean()), float((pred == victim_pred).double().mean())

        def build() -> nn.Module:
            seed_everything(self.seed)
            return surrogate().to(dev)

        oracle = victim.oracle(1, output=output, k=k, postprocess=postprocess, max_queries=self.budget)
        ctx = ExtractionContext(
            oracle=oracle,
            gen=make_generator(self.seed),
            num_classes=victim.num_classes,
            build=build,
            measure=measure,
            progress=progress,
        )
        model = self._extract(ctx, x_pool.to(dev), None if y_pool is None else y_pool.to(dev, torch.long))
        attack_seconds = time.perf_counter() - start - measuring[0]
        queries = ctx.used
        assert queries <= self.budget, "the oracle enforces the budget"
        sur = victim.like(model)
        surrogate_pred = sur.predict(x_test)
        if not ctx.curve or ctx.curve[-1].queries != queries:  # pragma: no cover - a subclass's bug
            raise AssertionError(f"{self.name}: the last curve point must be the returned surrogate's")
        if queries < self.budget:
            ctx.warnings.append(
                f"{self.name} used {queries} of its {self.budget} queries (the pool or the schedule ran out first)"
            )
        transfer = self._transfer(victim, sur, x_test, y_test, victim_pred)
        return ExtractionResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            output=output if output != "top-k" else f"top-{k}",
            defenses=tuple(defenses),
            budget=self.budget,
            queries=queries,
            surrogate={
                **(surrogate_info or {}),
                "parameters": sum(t.numel() for t in model.parameters()),
                "init_seed": self.seed,
                "training": {
                    k2: v for k2, v in vars(self.train_config()).items() if k2 not in ("seed", "eval_batch_size")
                },
            },
            transfer_set={**(pool_info or {}), "pool_size": p},
            y=y_test.cpu(),
            victim_pred=victim_pred.cpu(),
            surrogate_pred=surrogate_pred.cpu(),
            curve=tuple(ctx.curve),
            transfer=transfer,
            seconds=time.perf_counter() - start,
            attack_seconds=attack_seconds,
            model=model.eval(),
            warnings=tuple(ctx.warnings),
            extra={**ctx.extra, **self._extra()},
        )

    def _transfer(
        self, victim: Victim, sur: Victim, x: Tensor, y: Tensor, victim_pred: Tensor
    ) -> dict[str, Any] | None:
        """PGD-40 (no early stop: an example that only just crosses the surrogate's boundary transfers
        worse) crafted white-box on the surrogate against the true labels of the first `transfer_n` test
        images the victim classifies correctly, then shown to the victim; beside it, random +-eps signs."""
        if self.transfer_n == 0:
            return None
        channels = x.shape[1]
        eps = self.transfer_eps if self.transfer_eps is not None else default_transfer_eps(channels)
        keep = (victim_pred == y).nonzero().squeeze(1)[: self.transfer_n]
        if keep.numel() == 0:
            return None
        x, y = x[keep], y[keep]
        threat = ThreatModel(norm="linf", eps=eps, bounds=victim.bounds)
        pgd = PGD(threat=threat, seed=self.seed, steps=40, early_stop=False)
        gen = make_generator(self.seed, x.device)
        x_adv = pgd.perturb(sur, x, y, gen=gen)
        lo, hi = victim.bounds
        signs = torch.randint(0, 2, x.shape, generator=make_generator(self.seed), dtype=x.dtype).to(x.device)
        x_noise = (x + eps * (2 * signs - 1)).clamp(lo, hi)
        return {
            "attack": "pgd-40 on the surrogate",
            "eps": eps,
            "n": int(keep.numel()),
            "success_rate": float((victim.predict(x_adv) != y).double().mean()),
            "surrogate_success_rate": float((sur.predict(x_adv) != y).double().mean()),
            "noise_success_rate": float((victim.predict(x_noise) != y).double().mean()),
        }
