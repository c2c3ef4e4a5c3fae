"""The one error tree of bastion.

Every error a user can cause is a `BastionError`: its message says what was wrong, the value received
and how to fix it, and its `exit_code` is what the command line exits with (click's habit).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType

__all__ = [
    "BastionError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EndpointError",
    "MissingExtraError",
    "ModelError",
    "QueryBudgetExceeded",
    "StoreError",
    "UnknownNameError",
    "did_you_mean",
    "require_extra",
]


class BastionError(Exception):
    """Base of every error bastion raises on purpose; the CLI prints it as one line and exits."""

    exit_code: int = 2


class ConfigError(BastionError, ValueError):
    """A parameter, option or plan entry has a value that is not allowed."""


class MissingExtraError(ConfigError):
    """A feature needs a package of an optional extra that is not installed."""


def require_extra(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import `module`, a package of the optional extra `extra`, or raise `MissingExtraError` saying that
    `purpose` needs it and how to install it: the one way bastion imports an optional dependency."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name or module
        raise MissingExtraError(
            f"{purpose} needs {missing}, which is not installed: pip install 'bastion[{extra}]'"
        ) from None


class UnknownNameError(ConfigError, KeyError):
    """A registered name (model, data set, attack, recipe ...) that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(BastionError):
    """A data set cannot be found, read or verified, or a batch has the wrong shape or range."""


class CheckpointError(BastionError):
    """A checkpoint or weights file is missing, corrupted, truncated, pickled or does not fit the model."""


class ModelError(BastionError):
    """A model cannot be built or imported, or its outputs are not usable logits."""


class StoreError(BastionError):
    """The results database cannot be opened or written, or a run asked for does not exist."""


class EndpointError(BastionError):
    """A deployed model (an HTTP endpoint) cannot be reached, keeps failing after its retries, or answers
    outside bastion's JSON protocol."""


class QueryBudgetExceeded(BastionError):
    """A black-box query would take a sample past its query budget."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest choice, or an empty string when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""
