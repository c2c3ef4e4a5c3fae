"""Adversarial-training recipes for `bastion train --recipe ...`; each registers itself in `RECIPES`."""

from bastion.defenses.training.co_monitor import CatastrophicOverfittingMonitor, find_collapse
from bastion.defenses.training.fgsm_rs import FGSMRS
from bastion.defenses.training.gaussian import GaussianNoise
from bastion.defenses.training.gradalign import GradAlign
from bastion.defenses.training.pgd_at import PGDAT
from bastion.defenses.training.trades import TRADES, trades_loss, trades_perturb

__all__ = [
    "FGSMRS",
    "PGDAT",
    "TRADES",
    "CatastrophicOverfittingMonitor",
    "GaussianNoise",
    "GradAlign",
    "find_collapse",
    "trades_loss",
    "trades_perturb",
]
