"""The contract of the model-extraction attacks on split federated learning (Li, Rakin, Chen, Yang, He,
Fan, Chakrabarti, arXiv 2303.08581; reference `zlijingtao/SFL-MEA`, branch `old-commit`,
`attacks/model_extraction_attack.py`: `prepare_steal_attack`, `steal_attack`).

`SplitExtractionAttack.run` is final. It gives the subclass what a malicious SFL client holds (the
client-side model C, a `SplitOracle` on the server, its own labelled data or unlabelled auxiliary
images, as the method needs), lets it gather its transfer set (`_collect`, the only place queries are
sent), builds a freshly initialised surrogate top Ŝ (the server's architecture, Xavier-uniform weights
and zero biases, as the reference's `init_weights`), trains it (`_epoch`, SGD with momentum 0.9, weight
decay 5e-4, learning rate x0.2 at 20/50/80% of the epochs, as `steal_attack`), and measures on test
images the attacker never saw: the accuracy of Ŝ∘C, its fidelity (label agreement) to S∘C, the
victim's accuracy and the gap, and the same two numbers for the untrained Ŝ (the random baseline). The
queries reported are the oracle's own count; the planned count is checked against it.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.attacks.extraction._sfl_split import SplitModel, SplitOracle
from bastion.core.errors import ConfigError, DataError
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report
from bastion.core.random import make_generator
from bastion.core.threat import Access
from bastion.train.augment import random_crop, random_flip

__all__ = [
    "Attacker",
    "SplitExtractionAttack",
    "SplitExtractionResult",
    "augment",
    "ce_epoch",
    "fresh_surrogate",
    "soft_cross_entropy",
]


@dataclass(frozen=True)
class Attacker:
    """What the malicious client holds: C (used, never trained), the oracle, and its data."""

    client: nn.Module
    oracle: SplitOracle
    num_classes: int
    input_shape: tuple[int, int, int]
    device: torch.device
    x_own: Tensor | None = None  # (N, C, H, W) its labelled share of the training data
    y_own: Tensor | None = None  # (N,)
    x_aux: Tensor | None = None  # (M, C, H, W) unlabelled auxiliary images

    def z(self, x: Tensor) -> Tensor:
        """C(x) without autograd history (C in eval mode)."""
        with torch.no_grad():
            return self.client(x)


@dataclass(frozen=True)
class SplitExtractionResult:
    """What a split-learning extraction attack achieved (plain JSON through `to_dict`).

    Attributes:
        accuracy: test accuracy of Ŝ∘C.
        fidelity: label agreement of Ŝ∘C with S∘C on the test images.
        victim_accuracy: test accuracy of S∘C (after the attack, for an online server).
        random_accuracy, random_fidelity: the same for the freshly initialised, untrained Ŝ.
        queries: gradient rows the oracle answered (its own count); planned_queries: what the attack planned.
        transfer: rows of the surrogate's training set; seconds: prepare (queries) and train wall time.
    """

    method: str
    params: dict[str, Any]
    seed: int
    mode: str
    server_layers: int
    total_layers: int
    budget: int | None
    queries: int
    planned_queries: int
    accuracy: float
    fidelity: float
    victim_accuracy: float
    random_accuracy: float
    random_fidelity: float
    n_test: int
    transfer: int
    transfer_source: str
    epochs: int
    kept_epoch: int
    seconds_prepare: float
    seconds_train: float
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Victim accuracy minus surrogate accuracy."""
        return self.victim_accuracy - self.accuracy

    @property
    def seconds(self) -> float:
        return self.seconds_prepare + self.seconds_train

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["warnings"] = list(self.warnings)
        out.update(gap=self.gap, seconds=self.seconds, surrogate_init="xavier-uniform, zero bias")
        return out


def fresh_surrogate(server: nn.Module, gen: torch.Generator) -> nn.Module:
    """A module of the server's architecture with nothing of its weights: conv and linear weights
    Xavier-uniform, biases 0, BatchNorm reset (the reference's `init_weights`)."""
    sur = copy.deepcopy(server).cpu()  # initialised by the CPU generator; the caller moves it
    with torch.no_grad():
        for m in sur.modules():
            if isinstance(m, nn.Conv2d | nn.Linear | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(m.weight, generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()
            else:
                for p in m.parameters(recurse=False):  # anything else with weights: no trace of S's
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    for p in sur.parameters():
        p.requires_grad_(True)
    return sur.train()


def rotate(x: Tensor, degrees: float, gen: torch.Generator) -> Tensor:
    """Rotate each image by an angle drawn uniformly in [-degrees, degrees] (bilinear, zero fill)."""
    theta = (torch.rand(x.shape[0], generator=gen) * 2 - 1) * math.radians(degrees)  # (N,)
    cos, sin = theta.cos(), theta.sin()
    mat = torch.stack(
        [torch.stack([cos, -sin, torch.zeros_like(cos)], 1), torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1
    )
    grid = F.affine_grid(mat.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: Tensor, gen: torch.Generator, *, flip: bool) -> Tensor:
    """The reference's training augmentation: pad-and-crop (4 pixels at side 32, scaled with the side: 1 at
    side 8), left-right flip (optional), rotation within 15 degrees."""
    x = random_crop(x, max(1, round(x.shape[-1] / 8)), gen)
    if flip:
        x = random_flip(x, gen)
    return rotate(x, 15.0, gen).clamp_(0, 1)


def ce_epoch(
    surrogate: nn.Module,
    opt: torch.optim.Optimizer,
    atk: Attacker,
    x: Tensor,
    y: Tensor,
    gen: torch.Generator,
    *,
    batch_size: int,
    flip: bool | None,
) -> float:
    """One shuffled pass of CE on (C(x), y); `flip=None`: no augmentation, else `augment(flip=flip)`."""
    order = torch.randperm(x.shape[0], generator=gen).to(x.device)
    total = 0.0
    for i in range(0, x.shape[0], batch_size):
        idx = order[i : i + batch_size]
        xb = x[idx] if flip is None else augment(x[idx], gen, flip=flip)
        loss = F.cross_entropy(surrogate(atk.z(xb)), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * idx.numel()
    return total / max(x.shape[0], 1)


def soft_cross_entropy(logits: Tensor, p: Tensor) -> Tensor:
    """Mean over rows of `-sum_k p_k log softmax(logits)_k`."""
    return -(p * F.log_softmax(logits, dim=1)).sum(1).mean()


@dataclass(frozen=True, kw_only=True)
class SplitExtractionAttack(Attack, ABC):
    """Base of the SFL extraction attacks (family `split-extraction`).

    A subclass declares `needs` (`own` labelled data, `aux` unlabelled images, or nothing) and `source`
    (its transfer set, in words), and implements `planned_queries` (exact, from the budget and the
    data), `_collect` (queries; returns its transfer set) and `_epoch` (one epoch of training Ŝ).
    """

    family: ClassVar[str] = "split-extraction"
    access: ClassVar[Access] = "white-box"  # of the client-side model C; the server only through gradients
    needs: ClassVar[Literal["", "own", "aux"]] = ""
    source: ClassVar[str] = ""

    budget: int = param(1000, ge=0, help="gradient queries (rows answered by the server) at most")
    epochs: int = param(200, ge=1, help="epochs of surrogate training (reference: 200)")
    batch_size: int = param(128, ge=1, help="surrogate training batch (reference: 128)")
    lr: float | None = param(None, gt=0, help="surrogate SGD learning rate; default 0.02 (0.005 for 8 server layers)")
    keep: Literal["last", "best-accuracy", "best-fidelity"] = param(
        "last", help="which epoch's surrogate to report: the last (bastion) or the best on the test set (reference)"
    )
    flip: bool = param(True, help="left-right flips in the training augmentation (reference: yes; digits: no)")

    @abstractmethod
    def planned_queries(self, num_classes: int, n_own: int, n_aux: int) -> int:
        """The exact number of gradient rows the attack will send."""

    @abstractmethod
    def _collect(self, atk: Attacker, gen: torch.Generator, progress: ProgressFn | None) -> Any:
        """Send the queries and build the transfer set the surrogate trains on."""

    @abstractmethod
    def _epoch(
        self, surrogate: nn.Module, opt: torch.optim.Optimizer, atk: Attacker, data: Any, gen: torch.Generator
    ) -> float:
        """One epoch of surrogate training; returns the mean loss."""

    def _size(self, data: Any) -> int:
        """Rows of the transfer set."""
        return int(data[0].shape[0])

    def _lr(self, server_layers: int) -> float:
        return self.lr if self.lr is not None else (0.005 if server_layers >= 8 else 0.02)

    @final
    def run(
        self,
        split: SplitModel,
        x_test: Tensor,
        y_test: Tensor,
        *,
        x_own: Tensor | None = None,
        y_own: Tensor | None = None,
        x_aux: Tensor | None = None,
        oracle: SplitOracle | None = None,
        progress: ProgressFn | None = None,
    ) -> SplitExtractionResult:
        """Extract the server's top from gradient queries and measure the surrogate on (x_test, y_test).

        Args:
            split: the deployment's model, cut (`split_model`); the attacker gets its C and an oracle.
            x_test: test images (N, C, H, W) in [0, 1] the attacker never sees; y_test their labels (N,).
            x_own: the attacking client's labelled images (Train-ME, SoftTrain-ME); y_own their labels.
            x_aux: unlabelled auxiliary images (GM-ME).
            oracle: the server to query; default an offline oracle on `split.server` with `budget`.
                An online oracle (`SplitFed.oracle`) is passed with the `SplitFed`'s own `split`.
            progress: called as queries are sent and epochs end.
        """
        device = next(split.client.parameters()).device
        if x_test.shape[0] < 1 or tuple(x_test.shape[1:]) != split.input_shape or y_test.shape != (x_test.shape[0],):
            raise DataError(f"test images must be (N, {split.input_shape}) with N >= 1 and labels (N,)")
        if self.needs == "own" and (
            x_own is None or y_own is None or y_own.shape != (x_own.shape[0],) or not len(y_own)
        ):
            raise DataError(f"{self.name} trains on the attacker's own labelled data: pass x_own and y_own (N >= 1)")
        if self.needs == "aux" and (x_aux is None or x_aux.shape[0] < 1):
            raise DataError(f"{self.name} queries on unlabelled auxiliary images: pass x_aux (N >= 1)")
        n_own = 0 if x_own is None else int(x_own.shape[0])
        n_aux = 0 if x_aux is None else int(x_aux.shape[0])
        planned = self.planned_queries(split.num_classes, n_own, n_aux)
        if oracle is None:
            oracle = SplitOracle.offline(split, budget=self.budget)
        if oracle.remaining is not None and planned > oracle.remaining:
            raise ConfigError(
                f"{self.name} plans {planned} gradient queries and the oracle has {oracle.remaining} left"
            )
        start, before = time.perf_counter(), oracle.queries
        client_mode = split.client.training
        split.client.eval()
        atk = Attacker(
            client=split.client,
            oracle=oracle,
            num_classes=split.num_classes,
            input_shape=split.input_shape,
            device=device,
            x_own=None if x_own is None else x_own.to(device),
            y_own=None if y_own is None else y_own.to(device).long(),
            x_aux=None if x_aux is None else x_aux.to(device),
        )
        gen = make_generator(self.seed)
        data = self._collect(atk, gen, progress)
        queries = oracle.queries - before
        assert queries == planned, f"{self.name} sent {queries} gradient queries and planned {planned}"
        t_prepare = time.perf_counter() - start

        start = time.perf_counter()
        surrogate = fresh_surrogate(split.server, gen).to(device)
        truth = split.predict(x_test)  # S∘C's labels, measured by the harness (the attacker never sees them)
        y_test = y_test.to(device)

        def measure(sur: nn.Module) -> tuple[float, float]:
            pred = split.predict(x_test, server=sur)
            return float((pred == y_test).double().mean()), float((pred == truth).double().mean())

        random_acc, random_fid = measure(surrogate)
        lr = self._lr(split.server_layers)
        opt = torch.optim.SGD(surrogate.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        milestones = sorted({int(f * self.epochs) for f in (0.2, 0.5, 0.8)})
        kept, kept_epoch, best, losses = None, self.epochs, -1.0, []
        for epoch in range(1, self.epochs + 1):
            for group in opt.param_groups:
                group["lr"] = lr * 0.2 ** sum(epoch > m for m in milestones)
            surrogate.train()
            losses.append(self._epoch(surrogate, opt, atk, data, gen))
            if self.keep != "last":
                acc, fid = measure(surrogate)
                score = acc if self.keep == "best-accuracy" else fid
                if score > best:
                    best, kept, kept_epoch = score, copy.deepcopy(surrogate.state_dict()), epoch
            report(progress, self.name, epoch, self.epochs, loss=losses[-1])
        if kept is not None:
            surrogate.load_state_dict(kept)
        surrogate.eval()
        accuracy, fidelity = measure(surrogate)
        victim_accuracy = float((truth == y_test).double().mean())
        split.client.train(client_mode)
        warnings = []
        if not all(math.isfinite(v) for v in losses):
            warnings.append(f"{self.name}: the surrogate's training loss became NaN or infinite")
        return SplitExtractionResult(
            method=self.name,
            params=self.params(),
            seed=self.seed,
            mode=oracle.mode,
            server_layers=split.server_layers,
            total_layers=split.total_layers,
            budget=oracle.budget,
            queries=queries,
            planned_queries=planned,
            accuracy=accuracy,
            fidelity=fidelity,
            victim_accuracy=victim_accuracy,
            random_accuracy=random_acc,
            random_fidelity=random_fid,
            n_test=int(x_test.shape[0]),
            transfer=self._size(data),
            transfer_source=self.source,
            epochs=self.epochs,
            kept_epoch=kept_epoch,
            seconds_prepare=t_prepare,
            seconds_train=time.perf_counter() - start,
            warnings=tuple(warnings),
            extra={"loss": [v if math.isfinite(v) else None for v in losses], "lr": lr},
        )
