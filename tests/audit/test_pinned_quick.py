"""The quick plan's numbers on the default model are pinned: a change to the audit, the attacks or the
store must leave every scenario's metrics and per-sample records as they were recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.store import Store

PINS = "quick-mnist5k.json"
# the model `bastion audit` trains when given none (small_cnn, standard recipe, mnist5k)
MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "small_cnn-mnist5k.safetensors"


def _untimed(obj: Any) -> Any:
    """`obj` without wall-clock entries, which differ on every run."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def test_quick_plan_numbers_are_unchanged(pins: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pin.db'}"
    result = CliRunner().invoke(app, ["audit", "-c", str(MODEL), "--plan", "quick", "--db", url, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    with Store(url) as store:
        run = store.run(1)
    assert run.seed == 0 and run.data == "mnist5k"
    for r in run.results:
        numbers = {k: v for k, v in r.metrics.items() if k != "seconds"}
        pins.check(f"{r.family}/{r.key}", numbers, _untimed(r.record), abs_tol=0.02, rel_tol=0.05)
    assert len(run.results) == 13
