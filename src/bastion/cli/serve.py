"""`bastion serve`: the dashboard over a results database, read-only, on loopback unless told otherwise."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import typer

from bastion.cli.runs import DbOpt
from bastion.core.errors import ConfigError, require_extra
from bastion.store import DEFAULT_URL


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="address to listen on; anything but loopback exposes the results")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port", min=0, max=65535)] = 8000,
) -> None:
    """Browse stored runs in a web browser: runs and models, a run's scorecard with its plots and images,
    two runs compared, a model's robust accuracy over time (the `web` extra)."""
    uvicorn = require_extra("uvicorn", extra="web", purpose="the dashboard")
    create_app = require_extra("bastion.web", extra="web", purpose="the dashboard").create_app
    if not host.strip():
        raise ConfigError("--host takes an address, e.g. 127.0.0.1")
    url = db or os.environ.get("BASTION_DB") or DEFAULT_URL
    app = create_app(url)  # opens the store read-only now: a wrong --db fails here, in one line
    if not _loopback(host):
        typer.echo(
            f"warning: listening on {host}, not loopback: anyone who can reach this machine can read the results",
            err=True,
        )
    typer.echo(f"bastion dashboard on http://{host}:{port}/ (read-only; Ctrl-C stops it)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.store.close()  # the app's lifespan closes it too; this covers a server that never started
