"""Post-processors from command-line strings: `NAME` or `NAME:key=value,key=value`, applied in order."""

from __future__ import annotations

from collections.abc import Sequence

from bastion.core.errors import ConfigError
from bastion.core.params import parse_params
from bastion.core.registry import DEFENSES
from bastion.defenses.postprocess.base import PostProcess

__all__ = ["build_postprocessors", "parse_defense"]


def parse_defense(spec: str) -> PostProcess:
    """`"aaa:interval=4,temperature=2"` -> `AAA(interval=4.0, temperature=2.0)`; a `ConfigError` otherwise."""
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise ConfigError(f"a defense is given as NAME or NAME:key=value,...; got {spec!r}")
    cls = DEFENSES.get(name, family="postprocess")
    assert isinstance(cls, type) and issubclass(cls, PostProcess)
    pairs = [p for p in rest.split(",") if p.strip()]
    return cls(**parse_params(cls, pairs))


def build_postprocessors(specs: Sequence[str]) -> list[PostProcess]:
    """One post-processor per string, in the order given (the first rewrites the model's logits)."""
    return [parse_defense(s) for s in specs]
