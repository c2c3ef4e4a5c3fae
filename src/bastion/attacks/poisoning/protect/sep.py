"""`self-ensemble-protection`: targeted attacks on the checkpoints of one training run make a training set
unlearnable (Chen et al., ICLR 2023)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import register_attack
from bastion.attacks.poisoning.protect.base import DataProtection, ModelFactory, linf_radius
from bastion.core.errors import ConfigError
from bastion.core.ops import batch_slices
from bastion.core.params import param
from bastion.core.progress import ProgressFn, report
from bastion.train import Callback, Hooks, TrainState, default_config, fit

__all__ = ["SelfEnsembleProtection", "spaced_checkpoints"]


def spaced_checkpoints(saved: int, n: int) -> list[int]:
    """Indices of `n` checkpoints evenly spaced among `saved`: the last of each of n equal intervals."""
    if not 1 <= n <= saved:
        raise ConfigError(f"self-ensemble-protection: cannot take {n} checkpoints of {saved} saved")
    return [math.ceil((i + 1) * saved / n) - 1 for i in range(n)]


class _Snapshots(Callback):
    """A copy of the model after every epoch."""

    def __init__(self) -> None:
        self.models: list[nn.Module] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.models.append(copy.deepcopy(state.model).eval().requires_grad_(False))


@register_attack("self-ensemble-protection")
@dataclass(frozen=True, kw_only=True)
class SelfEnsembleProtection(DataProtection):
    """Self-Ensemble Protection (SEP). Chen, Yuan, Cheng, Gong, Qin, Wang, Huang, "Self-Ensemble
    Protection: Training Checkpoints Are Good Data Protectors", ICLR 2023, arXiv 2211.12005; reference
    `Sizhe-Chen/SEP` (`ens.py`).

    The checkpoints of a single training run have nearly orthogonal input gradients, so they form a
    diverse ensemble for free; a targeted attack on that ensemble moves each image towards another class
    in every stage of training, so a model trained on the result never learns the true features.

    1. Train a model from the factory on the clean images (the data's default recipe, `epochs`),
       keeping a copy after every epoch; take `checkpoints` of them evenly spaced (the last of each of N
       equal intervals).
    2. Target `y_t = (y + floor(K / 2)) mod K` (the reference's (y + 5) mod 10).
    3. `steps` times: `g = mean_j grad CE(f_j(x'), y_t)`, `x' <- clip(min(max(x' - alpha sign g, x - eps),
       x + eps), 0, 1)`, from x' = x, in chunks of `batch_size`.

    Defaults: the reference's eps 2/255 and alpha = eps / 2 (1/255), 30 steps; for digits eps 0.1. The
    reference trains ResNet-18 for 120 epochs and takes 30 of its improving checkpoints (those saved when
    the test accuracy rose); bastion trains the data's default recipe (12 epochs for digits), saves every
    epoch, takes 10, and does not look at test images while crafting. The feature-alignment (SEP-FA) and
    variance-reduction (SEP-FA-VR) variants are not built in.

    Published: 2/255 takes CIFAR-10 ResNet-18 from 94.56% to 14.68% test accuracy, against 41.35% for
    the best earlier method.
    """

    needs_model = True

    eps: float | None = param(None, gt=0, le=1, help="L-inf radius; default 0.1 (grayscale) or 2/255 (colour)")
    alpha: float | None = param(None, gt=0, help="step; default eps / 2")
    steps: int = param(30, ge=1, help="signed-gradient steps")
    checkpoints: int = param(10, ge=1, help="checkpoints of the training run in the ensemble")
    epochs: int | None = param(None, ge=1, help="epochs of the training run; default the data's recipe")
    batch_size: int = param(500, ge=1, help="images per chunk of the attack")

    def _protect(
        self,
        x: Tensor,
        y: Tensor,
        num_classes: int,
        gen: torch.Generator,
        build: ModelFactory | None,
        progress: ProgressFn | None,
    ) -> tuple[Tensor, dict[str, Any]]:
        assert build is not None
        shape = tuple(x.shape[1:])
        eps = linf_radius(self.eps, shape, grayscale=0.1, colour=2 / 255)
        alpha = eps / 2 if self.alpha is None else self.alpha
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        model = build(seed)
        cfg = default_config(shape, epochs=self.epochs, seed=seed)
        if self.checkpoints > cfg.epochs:
            raise ConfigError(
                f"self-ensemble-protection: {self.checkpoints} checkpoints need at least as many epochs; "
                f"got {cfg.epochs}"
            )
        snaps = _Snapshots()
        fit(model, x, y, cfg, hooks=Hooks(callbacks=[snaps]), progress=progress)
        ensemble = [snaps.models[i] for i in spaced_checkpoints(len(snaps.models), self.checkpoints)]
        device = next(model.parameters()).device
        out = x.clone()
        y_t = (y + num_classes // 2) % num_classes
        chunks = list(batch_slices(x.shape[0], self.batch_size))
        for done, part in enumerate(chunks):
            x0, target = x[part].to(device), y_t[part].to(device)
            x_p = x0.clone()
            for _ in range(self.steps):
                x_p.requires_grad_(True)
                with torch.enable_grad():
                    loss = sum(F.cross_entropy(f(x_p), target) for f in ensemble) / len(ensemble)
                    (grad,) = torch.autograd.grad(loss, x_p)
                x_p = torch.minimum(torch.maximum(x_p.detach() - alpha * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
            out[part] = x_p.cpu()
            report(progress, "self-ensemble-protection", done + 1, len(chunks))
        return out, {"eps": eps, "alpha": alpha, "epochs": cfg.epochs, "checkpoints": self.checkpoints}
