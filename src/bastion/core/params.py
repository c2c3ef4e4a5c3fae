"""Parameters declared once: a dataclass field carries its default, its allowed range and a line of help.

Validation, provenance records (`to_dict`) and the CLI's `key=value` parsing all read these fields,
so a method's hyperparameters are never listed twice.

    steps: int = param(10, ge=1, help="gradient steps per restart")
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from bastion.core.errors import ConfigError, did_you_mean

__all__ = [
    "ParamSpec",
    "param",
    "param_fields",
    "params_dict",
    "parse_eps",
    "parse_number",
    "parse_params",
    "validate_params",
]


@dataclass(frozen=True)
class ParamSpec:
    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def rule(self) -> str:
        parts = [f">= {self.ge}"] if self.ge is not None else []
        parts += [f"> {self.gt}"] if self.gt is not None else []
        parts += [f"<= {self.le}"] if self.le is not None else []
        parts += [f"< {self.lt}"] if self.lt is not None else []
        return " and ".join(parts)


def param(
    default: Any,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A hyperparameter field: its default, numeric bounds (checked by `validate_params`) and help."""
    spec = ParamSpec(help=help, ge=ge, gt=gt, le=le, lt=lt)
    if isinstance(default, list | dict | set):
        raise TypeError("parameters must have immutable defaults (use a tuple)")
    return dataclasses.field(default=default, metadata={"param": spec})


def param_fields(cls_or_obj: Any) -> list[tuple[dataclasses.Field[Any], ParamSpec, Any]]:
    """(field, spec, resolved type) for every `param` field of a dataclass, in declaration order."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = typing.get_type_hints(cls)
    return [(f, f.metadata["param"], hints[f.name]) for f in dataclasses.fields(cls) if "param" in f.metadata]


def _options(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)


def _describe(tp: Any) -> str:
    names = []
    for opt in _options(tp):
        if get_origin(opt) is Literal:
            names.append(" | ".join(repr(a) for a in get_args(opt)))
        elif opt is type(None):
            names.append("none")
        else:
            names.append(getattr(opt, "__name__", str(opt)))
    return " or ".join(names)


def _check_type(value: Any, tp: Any) -> bool:
    for opt in _options(tp):
        if opt is type(None) and value is None:
            return True
        if get_origin(opt) is Literal and value in get_args(opt):
            return True
        if opt is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if opt in (bool, str) and isinstance(value, opt):
            return True
        if get_origin(opt) is tuple and isinstance(value, tuple):
            return True
    return False


def validate_params(obj: Any) -> None:
    """Raise `ConfigError` (parameter, owner, what is allowed, what was given) for any bad value."""
    owner = getattr(obj, "name", type(obj).__name__)
    for f, spec, tp in param_fields(obj):
        value = getattr(obj, f.name)
        if not _check_type(value, tp):
            raise ConfigError(f"{owner}: {f.name} must be {_describe(tp)}; got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            bad = (
                not math.isfinite(value)
                or (spec.ge is not None and value < spec.ge)
                or (spec.gt is not None and value <= spec.gt)
                or (spec.le is not None and value > spec.le)
                or (spec.lt is not None and value >= spec.lt)
            )
            if bad:
                raise ConfigError(f"{owner}: {f.name} must be {spec.rule() or 'finite'}; got {value!r}")


def _parse_one(text: str, tp: Any, name: str, owner: str) -> Any:
    lowered = text.strip().lower()
    for opt in _options(tp):
        if opt is type(None) and lowered in ("none", "null"):
            return None
    for opt in _options(tp):
        if get_origin(opt) is Literal:
            for choice in get_args(opt):
                if str(choice) == text.strip():
                    return choice
        elif opt is bool and lowered in ("true", "false", "1", "0", "yes", "no"):
            return lowered in ("true", "1", "yes")
        elif opt is int:
            try:
                return int(text)
            except ValueError:
                continue
        elif opt is float:
            try:
                return parse_number(text)
            except ValueError:
                continue
        elif opt is str:
            return text
    raise ConfigError(f"{owner}: {name} must be {_describe(tp)}; got {text!r}")


def parse_number(text: str) -> float:
    """`"0.3"` -> 0.3 and `"8/255"` -> 8/255 (radii are written as fractions of the pixel range); a
    `ValueError` for anything else."""
    num, sep, den = text.strip().partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except ZeroDivisionError:
        raise ValueError(f"division by zero in {text!r}") from None


def parse_eps(value: str | float) -> float:
    """A perturbation radius: a number >= 0, or a fraction such as 8/255 in a string; `ConfigError` otherwise."""
    try:
        eps = parse_number(value) if isinstance(value, str) else value
    except ValueError:
        eps = math.nan
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"eps takes a number >= 0 or a fraction such as 8/255; got {value!r}")
    return float(eps)


def parse_params(cls: type, pairs: list[str]) -> dict[str, Any]:
    """`["steps=20", "loss=margin"]` -> `{"steps": 20, "loss": "margin"}`, typed by `cls`'s fields."""
    owner = getattr(cls, "name", cls.__name__)
    fields = {f.name: tp for f, _, tp in param_fields(cls)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"parameters are given as key=value; got {pair!r}")
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ConfigError(f"{owner} has no parameter {key!r}.{did_you_mean(key, fields)} Its parameters: {known}")
        out[key] = _parse_one(text, fields[key], key, owner)
    return out


def params_dict(obj: Any) -> dict[str, Any]:
    """The `param` fields of `obj` as plain JSON types."""
    return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v for f, _, _ in param_fields(obj)}
