"""bastion.defenses: adversarial-training recipes, output post-processors, certification, detectors, ownership."""

import bastion.defenses.detect  # registers the OOD detectors
import bastion.defenses.ownership  # registers the ownership methods
import bastion.defenses.postprocess  # registers the output post-processors
import bastion.defenses.training  # noqa: F401  (registers the recipes)
