"""`bastion serve`: loopback by default, a warning line when told otherwise, one-line errors (exit 2)
for a database it cannot open and for a missing `web` extra. uvicorn is replaced by a recorder, so
nothing listens."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app

uvicorn = pytest.importorskip("uvicorn")

if TYPE_CHECKING:
    from conftest import Filled  # tests/web/conftest.py


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    return calls


def test_serves_read_only_on_loopback(filled: Filled, served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["serve", "--db", filled.url, "--port", "8123"])
    assert result.exit_code == 0, result.output
    (call,) = served
    assert call["host"] == "127.0.0.1" and call["port"] == 8123
    assert call["app"].state.store.read_only
    assert "warning" not in result.stderr and "http://127.0.0.1:8123/" in result.stderr


def test_any_address_is_warned_about(filled: Filled, served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["serve", "--db", filled.url, "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert served[0]["host"] == "0.0.0.0"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]


@pytest.mark.parametrize("db", ["sqlite:///{tmp}/absent.db", "postgresql+psycopg://nobody@127.0.0.1:1/none"])
def test_unreachable_database_is_one_line(db: str, tmp_path: Path, served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["serve", "--db", db.format(tmp=tmp_path)])
    assert result.exit_code == 2 and served == []
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert not (tmp_path / "absent.db").exists()  # read-only: nothing created


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_starlette(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "starlette" or name.startswith("starlette."):
            raise ModuleNotFoundError(f"No module named {name!r}", name="starlette")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "bastion.web", raising=False)
    monkeypatch.delitem(sys.modules, "bastion.web.app", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_starlette)
    result = CliRunner().invoke(app, ["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == "error: the dashboard needs starlette, which is not installed: pip install 'bastion[web]'"
    )


def test_the_command_line_loads_the_web_stack_only_to_serve() -> None:
    code = (
        "import sys, bastion.cli.app; print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'uvicorn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
