"""`watermark`: a backdoor watermark checked by an exact binomial test (Adi et al., USENIX Security 2018)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.core.errors import ConfigError, DataError
from bastion.core.params import param
from bastion.core.random import make_generator
from bastion.core.results import OwnershipResult
from bastion.core.victim import Victim
from bastion.defenses.ownership._stats import binomial_tail, clopper_pearson
from bastion.defenses.ownership.base import OwnershipMethod, clean_accuracy, key_batch_edit, register_ownership
from bastion.train import BatchFn, Hooks, TrainConfig, TrainHistory, fit

__all__ = ["Watermark", "WatermarkKey"]


@dataclass(frozen=True)
class WatermarkKey:
    """The owner's secret: key images and the labels the marked model gives them.

    Attributes:
        x: key images (n, C, H, W) in [0, 1].
        labels: their secret labels (n,).
        kind: `abstract` (smooth noise, random labels) or `patch` (stamped held-out images, one label).
        num_classes: K.
        p0: the agreement rate of an independent model with one key label under the null: 1/K for
            random labels; for a one-label key, the largest rate measured on independent models
            (`Watermark.calibrate`), floored at 1/K.
        calibrated_on: how many independent models set `p0` (0: the 1/K floor alone).
    """

    x: Tensor
    labels: Tensor
    kind: str
    num_classes: int
    p0: float
    calibrated_on: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": int(self.labels.numel()),
            "num_classes": self.num_classes,
            "p0": self.p0,
            "calibrated_on": self.calibrated_on,
            "labels": self.labels.tolist(),
        }


@register_ownership("watermark")
@dataclass(frozen=True, kw_only=True)
class Watermark(OwnershipMethod):
    """Backdoor watermark. Adi, Baum, Cisse, Pinkas, Keshet, "Turning Your Weakness Into a Strength:
    Watermarking Deep Neural Networks by Backdooring", USENIX Security 2018, arXiv 1802.04633;
    reference adiyoss/WatermarkNN (`train.py`, `predict.py`, `fine-tune.py`).

    The owner trains the model with a secret key {(k_i, l_i)} of n images that the task never shows,
    appended to every training batch (`wm_batch` of them per batch; `batch_edit` is the
    `bastion.train.Hooks.batch` edit that does it). The key is

    - `abstract` (the paper's trigger set: out-of-distribution images with uniformly random labels).
      bastion draws seeded smooth noise: uniform noise on a coarse grid (side `grain`) plus half as
      much on a grid twice as fine, upsampled bilinearly and stretched to [0, 1] per image;
    - `patch`: held-out images of the task, not of the secret label, stamped with a seeded random
      binary square (`patch` pixels, at a seeded position) and all labelled with one secret class
      (`label`, or a seeded draw).

    Verification queries the suspect once per key image in label mode and counts the agreements m.
    Under the null, an independent model agrees with each key label at rate p0; the p-value is the
    exact binomial tail P(Bin(n, p0) >= m). p0 = 1/K for random labels, which any model that did not
    see them matches by chance; a one-label key needs p0 measured (`calibrate`: the largest agreement
    rate over independent models, floored at 1/K). The result carries m/n, p0 and a two-sided 95%
    Clopper-Pearson interval on the agreement rate; the claim is made at p < `alpha`.

    Defaults: the reference's key of n = 100 with 2 key images per batch of 100 (its 60 epochs of
    SGD are the training recipe's business); `grain` and the patch size are bastion's. Reproduces, on
    `mnist5k` with `small_cnn`: p < 1e-10 on the marked model and after two epochs of FTAL, p > 0.01 on
    independent models (`tests/defenses/test_ownership.py`, `benchmarks/ownership_mnist5k.py`).
    Cost: n label queries per suspect.
    """

    key: Literal["abstract", "patch"] = param("abstract", help="abstract: smooth noise, random labels; patch")
    n: int = param(100, ge=1, help="key images")
    wm_batch: int = param(2, ge=1, help="key images appended to every training batch")
    grain: int = param(4, ge=1, help="side of the coarse noise grid of abstract keys")
    patch: int = param(4, ge=1, help="side of the secret stamp of patch keys, in pixels")
    label: int | None = param(None, ge=0, help="the secret label of patch keys (default: a seeded draw)")

    def make_key(
        self,
        shape: tuple[int, int, int],
        num_classes: int,
        *,
        x_pool: Tensor | None = None,
        y_pool: Tensor | None = None,
    ) -> WatermarkKey:
        """A fresh secret key for images of `shape` (C, H, W) and K classes; `patch` keys stamp images of
        the held-out pool (x_pool, y_pool), which must hold `n` images outside the secret label."""
        if num_classes < 2:
            raise ConfigError(f"a watermark needs at least 2 classes; got {num_classes}")
        gen = make_generator(self.seed)
        c, h, w = shape
        if self.key == "abstract":
            coarse = F.interpolate(
                torch.rand(self.n, c, self.grain, self.grain, generator=gen), size=(h, w), mode="bilinear"
            )
            fine = F.interpolate(
                torch.rand(self.n, c, 2 * self.grain, 2 * self.grain, generator=gen), size=(h, w), mode="bilinear"
            )
            x = coarse + 0.5 * fine
            lo = x.flatten(1).amin(1).view(-1, 1, 1, 1)
            hi = x.flatten(1).amax(1).view(-1, 1, 1, 1)
            x = (x - lo) / (hi - lo).clamp_min(1e-12)
            labels = torch.randint(num_classes, (self.n,), generator=gen)
            return WatermarkKey(x=x, labels=labels, kind="abstract", num_classes=num_classes, p0=1.0 / num_classes)
        if x_pool is None or y_pool is None:
            raise DataError("patch keys stamp held-out images: give x_pool and y_pool")
        if self.patch > min(h, w):
            raise ConfigError(f"the stamp ({self.patch} px) must fit in the {h}x{w} images")
        label = self.label if self.label is not None else int(torch.randint(num_classes, (1,), generator=gen))
        if label >= num_classes:
            raise ConfigError(f"the secret label must lie in [0, {num_classes}); got {label}")
        eligible = torch.nonzero(y_pool.cpu() != label).flatten()
        if eligible.numel() < self.n:
            raise DataError(
                f"patch keys need {self.n} held-out images outside class {label}; the pool has {eligible.numel()}"
            )
        chosen = eligible[torch.randperm(eligible.numel(), generator=gen)[: self.n]]
        x = self._stamp(x_pool[chosen.to(x_pool.device)].cpu(), gen)
        labels = torch.full((self.n,), label, dtype=torch.long)
        return WatermarkKey(x=x, labels=labels, kind="patch", num_classes=num_classes, p0=1.0 / num_classes)

    def _stamp(self, x: Tensor, gen: torch.Generator) -> Tensor:
        c, h, w = x.shape[1:]
        pattern = (torch.rand(c, self.patch, self.patch, generator=gen) > 0.5).to(x.dtype)
        top = int(torch.randint(h - self.patch + 1, (1,), generator=gen))
        left = int(torch.randint(w - self.patch + 1, (1,), generator=gen))
        x = x.clone()
        x[:, :, top : top + self.patch, left : left + self.patch] = pattern
        return x

    def batch_edit(self, key: WatermarkKey) -> BatchFn:
        """The `Hooks.batch` edit that appends `wm_batch` key images with their labels to every batch."""
        return key_batch_edit(key.x, key.labels, self.wm_batch, self.seed)  # type: ignore[no-any-return]

    def embed(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        key: WatermarkKey,
        cfg: TrainConfig,
        *,
        x_test: Tensor | None = None,
        y_test: Tensor | None = None,
    ) -> TrainHistory:
        """Train `model` in place on (x, y) with the key appended to every batch (the reference's embedding)."""
        return fit(model, x, y, cfg, x_test=x_test, y_test=y_test, hooks=Hooks(batch=self.batch_edit(key)))

    def calibrate(self, key: WatermarkKey, independent: Sequence[Victim]) -> WatermarkKey:
        """The key with p0 measured: the largest agreement rate with the key labels over the independent
        models, floored at 1/K (the paper's null for a one-label key)."""
        rates = [float((v.predict(key.x).cpu() == key.labels).double().mean()) for v in independent]
        return replace(key, p0=max([1.0 / key.num_classes, *rates]), calibrated_on=len(rates))

    def verify(
        self,
        suspect: Victim,
        key: WatermarkKey,
        *,
        x_test: Tensor | None = None,
        y_test: Tensor | None = None,
    ) -> OwnershipResult:
        """Query the suspect once per key image (label mode) and test the agreements against p0."""
        start = time.perf_counter()
        suspect.check_input(key.x)
        n = key.labels.numel()
        oracle = suspect.oracle(n, output="label", max_queries=1)
        pred = oracle.query(key.x.to(suspect.device)).cpu()
        m = int((pred == key.labels).sum())
        p = binomial_tail(n, m, key.p0)
        warnings = []
        if key.kind == "patch" and key.calibrated_on == 0:
            warnings.append(
                "the one-label key's null rate p0 is the 1/K floor; calibrate it on independent models "
                "(Watermark.calibrate) before trusting the p-value"
            )
        return OwnershipResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            statistic=m / n,
            p_value=p,
            alpha=self.alpha,
            queries=oracle.queries.cpu(),
            seconds=time.perf_counter() - start,
            n=n,
            matches=m,
            p0=key.p0,
            interval=clopper_pearson(m, n),
            clean_accuracy=clean_accuracy(suspect, x_test, y_test),
            warnings=tuple(warnings),
            extra={"key": key.to_dict(), "predicted": pred.tolist()},
        )
