"""Reading a weights file without ever unpickling it: the one place both checkpoints and external models
(`checkpoint.py`, `external.py`) read safetensors from, so that neither imports the other to do it."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bastion.core.errors import CheckpointError

__all__ = ["check_file", "load_state_dict_file"]

_PICKLE_PROTOCOL_BYTE = 0x80
_ZIP_MAGIC = b"PK\x03\x04"


def _refuse_pickles(path: Path) -> None:
    """Raise `CheckpointError` for a pickled PyTorch file (legacy or zip), before anything reads it."""
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte header length, then the JSON header's "{"
    if head[8:9] == b"{":
        return
    if head[:1] and (head[0] == _PICKLE_PROTOCOL_BYTE or head[:4] == _ZIP_MAGIC):
        raise CheckpointError(
            f"{path} is a pickled PyTorch file; bastion never unpickles checkpoints. Convert it once where you "
            "trust it: safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
        )


def check_file(path: str | Path) -> Path:
    """`path` as a `Path`, checked to exist and not to be a pickle; a clear `CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; train one with `bastion train --out {path}`")
    _refuse_pickles(path)
    return path


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a clear `CheckpointError` when it is corrupted or truncated."""
    path = check_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupted or truncated ({e}); re-save or re-train it") from None
