"""``/docs``: Swagger UI served from the app's own vendored files. FastAPI's default page
loads them from a CDN (blank without network access, as in air-gapped deployments) and
inlines its start-up script, which the console's Content-Security-Policy forbids; this page
loads the same bundle from ``/console/static`` and starts it from ``swagger-init.js``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.console.web import render

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> Response:
    return render(request, "docs.html", {})
