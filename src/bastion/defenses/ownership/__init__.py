"""Ownership (family `ownership`): watermarks embedded in the model and checked through its labels
(`watermark`, `blackmarks`), and dataset inference, which needs no embedding (`dataset-inference`);
one class per file, the contract in `base.py`. Each check ends in a p-value (`OwnershipResult`)."""

from bastion.defenses.ownership.base import OwnershipMethod
from bastion.defenses.ownership.blackmarks import BlackMarks, BlackMarksKey
from bastion.defenses.ownership.dataset_inference import DatasetInference, DIState
from bastion.defenses.ownership.watermark import Watermark, WatermarkKey

__all__ = ["BlackMarks", "BlackMarksKey", "DIState", "DatasetInference", "OwnershipMethod", "Watermark", "WatermarkKey"]
