"""Detectors: out-of-distribution inputs today (`ood`)."""

import bastion.defenses.detect.ood  # noqa: F401  (registers the detectors)
