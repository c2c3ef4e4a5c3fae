"""bastion.defenses: adversarial-training recipes, output post-processors, certification, OOD detectors."""

import bastion.defenses.detect  # registers the OOD detectors
import bastion.defenses.postprocess  # registers the output post-processors
import bastion.defenses.training  # noqa: F401  (registers the recipes)
