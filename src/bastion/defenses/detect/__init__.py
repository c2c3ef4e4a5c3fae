"""Detectors: out-of-distribution inputs (`ood`), triggered inputs and poisoned training sets (`backdoor`)."""

import bastion.defenses.detect.backdoor  # registers the detectors
import bastion.defenses.detect.ood  # noqa: F401
