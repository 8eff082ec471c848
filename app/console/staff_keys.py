"""Admin pages for API keys: list with filters, issue (the secret shown once, on the
answer to the form and nowhere else), rotate with a grace period, revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from app.auth.principal import Scope
from app.clock.deps import ClockDep
from app.config import request_settings
from app.console.deps import AdminUser, ConsoleUser
from app.console.staff_common import (
    AdminForm,
    PageNumber,
    Pager,
    attempt,
    text,
    validation_messages,
)
from app.console.web import render, secure
from app.db.session import SessionDep
from app.keys import admin
from app.keys.schemas import KeyCreate, Rotate
from app.orm import ApiKey
from app.validation import DbId

router = APIRouter(include_in_schema=False)

SCOPES = [s.value for s in Scope]


async def _list_page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    now: datetime,
    *,
    customer_id: int | None,
    state: str | None,
    page: int,
    errors: list[str] | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    pager = Pager(request, page, 0)
    rows, total = await admin.search_keys(
        session,
        customer_id=customer_id,
        state=state,
        now=now,
        offset=pager.offset,
        limit=pager.per_page,
    )
    return render(
        request,
        "staff/keys.html",
        {
            "user": user,
            "keys": rows,
            "show_customer": True,
            "now": now,
            "pager": Pager(request, page, total),
            "customer_id": customer_id,
            "state": state or "",
            "scopes": SCOPES,
            "errors": errors or [],
            "form": form or {"customer_id": customer_id, "scopes": ["predict"]},
        },
        status_code,
    )


@router.get("/keys")
async def keys(
    request: Request,
    user: AdminUser,
    session: SessionDep,
    clock: ClockDep,
    page: PageNumber = 1,
    customer_id: Annotated[DbId | None, Query()] = None,
    state: Annotated[str | None, Query(pattern="^(active|revoked)?$")] = None,
) -> Response:
    """Every key, newest first, 50 a page; optionally of one customer, active or revoked.
    Prefixes only: a secret is never shown here."""
    return await _list_page(
        request, user, session, clock.now(), customer_id=customer_id, state=state or None, page=page
    )


def _created_page(
    request: Request, user: ConsoleUser, key: ApiKey, secret: str, replaced: ApiKey | None = None
) -> Response:
    return render(
        request,
        "staff/key_created.html",
        {"user": user, "key": key, "secret": secret, "replaced": replaced},
        201,
    )


@router.post("/keys")
async def create_key(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep
) -> Response:
    """Issue a key through the same service as ``POST /admin/keys``; the answer is the only
    page that ever shows its secret."""
    now = clock.now()
    form = await request.form()
    given: dict[str, Any] = {
        "customer_id": text(form, "customer_id"),
        "name": text(form, "name"),
        "scopes": [s for s in form.getlist("scopes") if isinstance(s, str)],
        "expires_at": text(form, "expires_at"),
    }
    try:
        data = KeyCreate.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        return await _list_page(
            request, user, session, now, customer_id=None, state=None, page=1,
            errors=validation_messages(exc), form=given, status_code=422,
        )  # fmt: skip
    issued, error = await attempt(
        session,
        admin.issue_key(
            session, user.principal, request_settings(request).secret_key, data, now=now
        ),
    )
    if error is not None or issued is None:
        return await _list_page(
            request, user, session, now, customer_id=None, state=None, page=1,
            errors=[error.message if error else "refused"], form=given,
            status_code=error.status_code if error else 409,
        )  # fmt: skip
    key, secret = issued
    return _created_page(request, user, key, secret)


def _back(form: Any, fallback: str = "/console/keys") -> str:
    """Where a key button returns to: the page it was on (a console path), else the list."""
    target = text(form, "return_to") or fallback
    if not target.startswith("/console/") or target.startswith("//"):
        return fallback
    return target


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep, key_id: DbId
) -> Response:
    now = clock.now()
    form = await request.form()
    _, error = await attempt(session, admin.revoke(session, user.principal, key_id, now=now))
    if error is not None:
        return await _list_page(
            request, user, session, now, customer_id=None, state=None, page=1,
            errors=[error.message], status_code=error.status_code,
        )  # fmt: skip
    return secure(RedirectResponse(_back(form), status_code=303))


@router.post("/keys/{key_id}/rotate")
async def rotate_key(
    request: Request, user: AdminForm, session: SessionDep, clock: ClockDep, key_id: DbId
) -> Response:
    """A new secret with the same settings; the old one works for ``grace_hours`` more."""
    now = clock.now()
    form = await request.form()
    try:
        hours = int(text(form, "grace_hours") or "0")
        body = Rotate(grace_seconds=hours * 3600)
    except (ValueError, ValidationError):
        return await _list_page(
            request, user, session, now, customer_id=None, state=None, page=1,
            errors=["grace hours: a whole number from 0 to 720"], status_code=422,
        )  # fmt: skip
    rotated, error = await attempt(
        session,
        admin.rotate(
            session,
            user.principal,
            request_settings(request).secret_key,
            key_id,
            timedelta(seconds=body.grace_seconds),
            now=now,
        ),
    )
    if error is not None or rotated is None:
        return await _list_page(
            request, user, session, now, customer_id=None, state=None, page=1,
            errors=[error.message if error else "refused"],
            status_code=error.status_code if error else 409,
        )  # fmt: skip
    old, new, secret = rotated
    return _created_page(request, user, new, secret, replaced=old)
