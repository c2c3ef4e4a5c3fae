"""bastion.defenses: adversarial-training recipes (and, as they land, output filters, certification, detectors)."""

import bastion.defenses.training  # noqa: F401  (registers the recipes)
