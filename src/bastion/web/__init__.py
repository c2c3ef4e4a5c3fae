"""bastion.web: the dashboard (`bastion serve`), a Starlette app over the results store, read-only.

Needs the `web` extra (`pip install 'bastion[web]'`: Starlette and uvicorn)."""

from bastion.web.app import CSP, create_app

__all__ = ["CSP", "create_app"]
