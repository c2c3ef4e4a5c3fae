"""Backdoor detection: run-time trigger-input detectors (family `backdoor-input`) and training-set
inspectors (family `backdoor-data`), one class per file; see `base.py`."""

from bastion.defenses.detect.backdoor.activation_clustering import ActivationClustering
from bastion.defenses.detect.backdoor.badexpert import BaDExpert
from bastion.defenses.detect.backdoor.base import DataInspector, InputDetector
from bastion.defenses.detect.backdoor.ntd import NTD
from bastion.defenses.detect.backdoor.spectral import SpectralSignatures
from bastion.defenses.detect.backdoor.strip import STRIP

__all__ = ["NTD", "STRIP", "ActivationClustering", "BaDExpert", "DataInspector", "InputDetector", "SpectralSignatures"]
