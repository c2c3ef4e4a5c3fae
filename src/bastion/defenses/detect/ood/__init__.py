"""Out-of-distribution detectors (family `ood`), one class per file; higher scores mean in-distribution."""

from bastion.defenses.detect.ood.base import OODDetector, register_detector
from bastion.defenses.detect.ood.energy import Energy
from bastion.defenses.detect.ood.kernel_pca import KernelPCA
from bastion.defenses.detect.ood.knn import KNN
from bastion.defenses.detect.ood.mahalanobis import Mahalanobis
from bastion.defenses.detect.ood.msp import MSP

__all__ = ["KNN", "MSP", "Energy", "KernelPCA", "Mahalanobis", "OODDetector", "register_detector"]
