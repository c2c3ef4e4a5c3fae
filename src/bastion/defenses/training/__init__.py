"""Adversarial-training recipes for `bastion train --recipe ...`; each registers itself in `RECIPES`."""

from bastion.defenses.training.pgd_at import PGDAT

__all__ = ["PGDAT"]
