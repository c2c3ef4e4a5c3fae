"""bastion: attack, defend and audit image classifiers across their whole life, in PyTorch."""

__version__ = "0.1.0"
