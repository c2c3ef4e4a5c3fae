"""Watermark and signature keys as files: safetensors tensors plus JSON metadata (the method, its
parameters and the key's own fields), written atomically. A key file is the owner's secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from bastion._atomic import atomic_path
from bastion.core.errors import CheckpointError
from bastion.defenses.ownership.blackmarks import BlackMarksKey
from bastion.defenses.ownership.watermark import WatermarkKey

__all__ = ["load_key", "save_key"]

_META = "bastion_ownership_key"
_FORMAT = "bastion-key-1"


def save_key(path: str | Path, key: WatermarkKey | BlackMarksKey, *, method: str, params: dict[str, Any]) -> Path:
    """Write `key` (made by `method` with `params`) to `path`."""
    if isinstance(key, WatermarkKey):
        tensors = {"x": key.x, "labels": key.labels}
        fields = {"kind": key.kind, "num_classes": key.num_classes, "p0": key.p0, "calibrated_on": key.calibrated_on}
    else:
        tensors = {
            "x": key.x,
            "targets": key.targets,
            "signature": key.signature,
            "bit_of_class": key.bit_of_class,
            "source": key.source,
        }
        fields = {}
    meta = {"format": _FORMAT, "method": method, "params": params, "fields": fields}
    with atomic_path(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={_META: json.dumps(meta)},
        )
    return Path(path)


def load_key(path: str | Path) -> tuple[str, dict[str, Any], WatermarkKey | BlackMarksKey]:
    """The method name, its parameters and the key stored at `path`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no key file at {path}; make one with `bastion watermark embed --key {path} ...`")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META, "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a bastion key file ({e})") from None
    if meta.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a bastion key file (format {meta.get('format')!r})")
    fields = meta["fields"]
    if meta["method"] == "watermark":
        key: WatermarkKey | BlackMarksKey = WatermarkKey(x=tensors["x"], labels=tensors["labels"], **fields)
    else:
        key = BlackMarksKey(**tensors)
    return meta["method"], meta["params"], key
