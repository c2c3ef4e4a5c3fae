"""The dashboard as an ASGI application (Starlette), read-only on the store.

Starlette rather than FastAPI or Flask: the dashboard is a handful of server-rendered HTML pages over
the report layer's Jinja2 templates, with no JSON API to validate or document, so FastAPI's pydantic
layer would add nothing; Starlette (the ASGI toolkit FastAPI itself is built on, maintained by the
Encode team) gives routing, Jinja2 templates, exception handlers, a lifespan hook and a test client,
and uvicorn serves it. Flask would be a WSGI stack of its own beside it.

Safety: the store is opened read-only at the connection (`Store(read_only=True)`), every template
escapes what it prints (Jinja2 autoescape; the only unescaped text is the SVG matplotlib writes, which
escapes its own labels), and every page is sent with a Content-Security-Policy that allows no script
at all, so a model or scenario name holding HTML is shown as text and could not run if it slipped by.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion.audit import presenters
from bastion.core.errors import ConfigError, StoreError
from bastion.report import TEMPLATES, format_metric
from bastion.store import Store
from bastion.web import pages

__all__ = ["CSP", "create_app"]

CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_ENV = Environment(
    loader=ChoiceLoader([PackageLoader("bastion.web", "templates"), TEMPLATES]),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals["fmt"] = format_metric
_TEMPLATES = Jinja2Templates(env=_ENV)


def _page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    return _TEMPLATES.TemplateResponse(request, template, context, status_code=status, headers=headers)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _int(request: Request, name: str) -> int:
    value = request.query_params.get(name, "").strip()
    if not value.isdigit():
        raise ConfigError(f"{name} takes a run id (a whole number); got {value!r}")
    return int(value)


def runs(request: Request) -> Response:
    filters = pages.Filters.parse(request.query_params)
    return _page(request, "runs.html.j2", {"nav": "runs", **pages.runs_page(_store(request), filters)})


def models(request: Request) -> Response:
    return _page(request, "models.html.j2", {"nav": "models", **pages.models_page(_store(request))})


def run(request: Request) -> Response:
    run_id: int = request.path_params["run_id"]
    context = pages.run_page(_store(request), run_id, presenters())
    return _page(request, "run.html.j2", {"nav": "runs", **context})


def compare(request: Request) -> Response:
    a, b = _int(request, "a"), _int(request, "b")
    context = pages.compare_page(_store(request), a, b, presenters())
    return _page(request, "compare.html.j2", {"nav": "runs", **context})


def model(request: Request) -> Response:
    model_id: int = request.path_params["model_id"]
    return _page(request, "model.html.j2", {"nav": "models", **pages.model_page(_store(request), model_id)})


def _error(request: Request, status: int, title: str, message: str) -> Response:
    return _page(request, "error.html.j2", {"nav": "", "status": status, "title": title, "message": message}, status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = "Page not found" if exc.status_code == 404 else "Request refused"
    message = f"There is no page at {request.url.path}." if exc.status_code == 404 else str(exc.detail)
    return _error(request, exc.status_code, title, message)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(request, 404, "Not in the store", str(exc))


async def _store_error(request: Request, exc: Exception) -> Response:
    return _error(request, 503, "The store did not answer", str(exc))


async def _config_error(request: Request, exc: Exception) -> Response:
    return _error(request, 400, "Bad request", str(exc))


def create_app(url: str) -> Starlette:
    """The dashboard over the results database at `url`, opened read-only (raises `StoreError` when it
    cannot be opened or holds no bastion tables)."""
    store = Store(url, read_only=True)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    handlers: dict[Any, Callable[[Request, Exception], Any]] = {
        HTTPException: _http_error,
        pages.NotFound: _not_found,
        StoreError: _store_error,
        ConfigError: _config_error,
    }
    app = Starlette(
        routes=[
            Route("/", runs, name="runs"),
            Route("/runs/{run_id:int}", run, name="run"),
            Route("/compare", compare, name="compare"),
            Route("/models", models, name="models"),
            Route("/models/{model_id:int}", model, name="model"),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.store = store
    return app
