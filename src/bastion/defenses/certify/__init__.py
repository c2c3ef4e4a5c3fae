"""Certified defenses: randomized smoothing (Cohen, Rosenfeld, Kolter) and its statistics."""

from bastion.defenses.certify._stats import betainc, betainc_inv, binomial_test_half, clopper_pearson_lower
from bastion.defenses.certify.smoothing import ABSTAIN, DEFAULT_RADII, CertifyResult, Smoothed, max_radius

__all__ = [
    "ABSTAIN",
    "DEFAULT_RADII",
    "CertifyResult",
    "Smoothed",
    "betainc",
    "betainc_inv",
    "binomial_test_half",
    "clopper_pearson_lower",
    "max_radius",
]
