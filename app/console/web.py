"""Rendering: the Jinja2 environment, the security headers every console response carries,
and the static files (vendored assets included), all served by the app itself."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.money.display import minor_string, plain, with_currency


def _folder(name: str) -> Path:
    location = files("app.console") / name
    assert isinstance(location, Path)
    return location


# No inline script or style anywhere: every script and stylesheet is a file of this app.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

templates = Jinja2Templates(directory=_folder("templates"))
templates.env.filters["minor"] = minor_string
templates.env.filters["money"] = with_currency
templates.env.filters["plain"] = plain


def secure(response: Response, *, cache: bool = False) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    """A page (or an htmx fragment) with the console's security headers; never cached."""
    return secure(templates.TemplateResponse(request, template, context, status_code=status_code))


class ConsoleStatic(StaticFiles):
    """The console's and /docs' static files, with the same headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return secure(response, cache=True)


def static_files() -> ConsoleStatic:
    return ConsoleStatic(directory=_folder("static"))
