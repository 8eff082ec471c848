"""Admin page for models: every version and variant in the catalog with its model card's
accuracy, size and measured speed and its state on this replica; load, unload (one variant
at a time) and default version through the same functions as the ``/admin/models``
endpoints."""

from __future__ import annotations

import re
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.console.deps import AdminUser, ConsoleUser
from app.console.staff_common import AdminForm, attempt, text
from app.console.web import render, secure
from app.db.session import SessionDep
from app.inference import management
from app.inference.admin import MODEL_NAME, VERSION, upload_from_form
from app.inference.deps import catalog_sync
from app.inference.deps import registry as _registry
from app.inference.endpoints import _info
from app.validation import MAX_MODEL_NAME, MAX_VERSION

router = APIRouter(include_in_schema=False)


def _page(
    request: Request, user: ConsoleUser, errors: list[str] | None = None, status_code: int = 200
) -> Response:
    registry = _registry(request)
    rows = [
        (_info(s, registry), s.version == registry.default_version(s.name)) for s in registry.list()
    ]
    return render(
        request,
        "staff/models.html",
        {"user": user, "rows": rows, "errors": errors or []},
        status_code,
    )


@router.get("/models")
async def models(request: Request, user: AdminUser) -> Response:
    return _page(request, user)


async def _change(
    request: Request, user: ConsoleUser, session: AsyncSession, action: str
) -> Response:
    form = await request.form()
    name, version = text(form, "name"), text(form, "version")
    if not name or not version or len(name) > MAX_MODEL_NAME or len(version) > MAX_VERSION:
        return _page(request, user, ["give a model name and a version"], 422)
    registry = _registry(request)
    sync = catalog_sync(request)
    call: Awaitable[object]
    if action in ("load", "unload"):
        call = management.set_loaded(
            session, user.principal, sync, registry, name, version, action == "load"
        )
    else:
        call = management.set_default_version(
            session, user.principal, sync, registry, name, version
        )
    _, error = await attempt(session, call)
    if error is not None:
        return _page(request, user, [error.message], error.status_code)
    return secure(RedirectResponse("/console/models", status_code=303))


@router.post("/models/upload")
async def upload(request: Request, user: AdminForm, session: SessionDep) -> Response:
    """Add a version from an archive, a manifest and optional eval data: the same function
    as ``POST /admin/models/{name}/versions/{version}``."""
    form = await request.form()  # parsed (and its files spooled) by the CSRF check
    name, version = text(form, "name"), text(form, "version")
    if (
        not name
        or not version
        or not re.fullmatch(MODEL_NAME, name)
        or not re.fullmatch(VERSION, version)
    ):
        return _page(request, user, ["give a model name (a-z, 0-9, - or _) and a version"], 422)
    sync = catalog_sync(request)
    _, error = await attempt(
        session, upload_from_form(request, session, user.principal, sync, name, version, form)
    )
    if error is not None:
        return _page(request, user, [error.message], error.status_code)
    return secure(RedirectResponse("/console/models", status_code=303))


@router.post("/models/load")
async def load(request: Request, user: AdminForm, session: SessionDep) -> Response:
    return await _change(request, user, session, "load")


@router.post("/models/unload")
async def unload(request: Request, user: AdminForm, session: SessionDep) -> Response:
    return await _change(request, user, session, "unload")


@router.post("/models/default")
async def default(request: Request, user: AdminForm, session: SessionDep) -> Response:
    return await _change(request, user, session, "default")
