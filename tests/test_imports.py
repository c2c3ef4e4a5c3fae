"""Import discipline (click's habit): the lower layers load nothing they have no business loading."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"typer", "rich", "click", "sqlalchemy", "jinja2", "ray", "safetensors", "sklearn", "mlxtend", "PIL"}
HEAVY |= {"starlette", "uvicorn"}  # the dashboard's web stack


def loaded_after(module: str) -> set[str]:
    code = f"import sys, json; import {module}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("bastion.core", set()),
        ("bastion.models", {"safetensors"}),
        ("bastion.train", {"safetensors", "sklearn", "mlxtend", "PIL"}),
    ],
)
def test_layers_load_only_what_they_need(module: str, allowed: set[str]) -> None:
    assert loaded_after(module) & (HEAVY - allowed) == set()
