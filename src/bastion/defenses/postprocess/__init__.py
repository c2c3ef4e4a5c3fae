"""Output post-processors: defenses that rewrite what a score API serves (`Oracle(postprocess=...)`).

Each class registers itself in `DEFENSES`; `build_postprocessors` makes them from command-line strings.
"""

from bastion.defenses.postprocess.aaa import AAA
from bastion.defenses.postprocess.base import PostProcess, keep_label, log_probs, register_postprocess
from bastion.defenses.postprocess.build import build_postprocessors, parse_defense
from bastion.defenses.postprocess.label_only import LabelOnly
from bastion.defenses.postprocess.reverse_sigmoid import ReverseSigmoid
from bastion.defenses.postprocess.rounding import Round
from bastion.defenses.postprocess.topk import TopK

__all__ = [
    "AAA",
    "LabelOnly",
    "PostProcess",
    "ReverseSigmoid",
    "Round",
    "TopK",
    "build_postprocessors",
    "keep_label",
    "log_probs",
    "parse_defense",
    "register_postprocess",
]
