from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, Field

from app.auth.deps import Admin, ProtectedRoute
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import error_schema
from app.keys import admin
from app.keys.schemas import KeyCreate, KeyExpire, KeyRef, Rotate
from app.orm import ApiKey
from app.validation import DbId

router = APIRouter(prefix="/admin/keys", tags=["keys"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the admin scope"),
}
_ONE: dict[int | str, dict[str, Any]] = {**_ERRORS, 404: error_schema("No such key")}

IdOrPrefix = Annotated[
    KeyRef,
    Path(
        description="The key's id, or its public prefix (`tg_` + 8 characters)",
        examples=["42", "tg_AbCd1234"],
    ),
]


class KeyOut(BaseModel):
    """A key as listed: the public prefix and last four characters, never the secret."""

    id: int
    customer_id: int
    name: str | None
    prefix: str
    last_four: str
    scopes: list[str]
    allowed_models: list[str] | None
    requests_per_minute: int | None
    items_per_minute: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: int | None
    last_used_at: datetime | None
    created_at: datetime
    legacy_staff: bool = Field(
        description="An admin or finance key of a customer that is not the operator account, "
        "issued before operator accounts existed: its staff scopes keep working until it is "
        "re-issued to the operator account (create one there, revoke this one)"
    )


class KeyCreated(KeyOut):
    secret: str = Field(description="Shown once; store it now")


class KeyList(BaseModel):
    data: list[KeyOut]


class Rotated(BaseModel):
    old: KeyOut
    new: KeyCreated


def _out(key: ApiKey) -> KeyOut:
    return KeyOut.model_validate(key, from_attributes=True)


def _created(key: ApiKey, secret: str) -> KeyCreated:
    return KeyCreated(**_out(key).model_dump(), secret=secret)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_ERRORS,
        404: error_schema("No such customer"),
        422: error_schema(
            "Invalid body; or admin/finance for a customer that is not the operator account "
            "(`operator_only_scope`)"
        ),
    },
)
async def create_key(
    actor: Admin, request: Request, session: SessionDep, clock: ClockDep, body: KeyCreate
) -> KeyCreated:
    """Issue a key for a customer with its scopes, models, rate limits and expiry. The secret
    is in this response only; it is stored as a hash. Only keys of the operator account may
    hold `admin` or `finance`; a customer's keys hold `predict` and `billing`. Audited."""
    key, secret = await admin.issue_key(
        session, actor, request_settings(request).secret_key, body, now=clock.now()
    )
    return _created(key, secret)


@router.get("", responses=_ERRORS)
async def list_keys(
    _: Admin,
    session: SessionDep,
    customer_id: Annotated[DbId | None, Query()] = None,
    legacy_staff: Annotated[
        bool | None, Query(description="Only the legacy staff keys (true) or only the others")
    ] = None,
) -> KeyList:
    """Every key, optionally of one customer: prefixes only, never secrets.
    `?legacy_staff=true` lists the admin and finance keys of customers still to be re-issued
    to the operator account."""
    return KeyList(
        data=[_out(k) for k in await admin.list_keys(session, customer_id, legacy_staff)]
    )


@router.get("/{id_or_prefix}", responses=_ONE)
async def get_key(_: Admin, session: SessionDep, id_or_prefix: IdOrPrefix) -> KeyOut:
    """One key by id or public prefix, never its secret."""
    return _out(await admin.get_key(session, id_or_prefix))


@router.post(
    "/{id_or_prefix}/revoke",
    responses={**_ONE, 409: error_schema("The last working admin key (`last_admin_key`)")},
)
async def revoke_key(
    actor: Admin, session: SessionDep, clock: ClockDep, id_or_prefix: IdOrPrefix
) -> KeyOut:
    """Stops working everywhere within the key cache TTL (1 s), also a key rotated with a
    grace period that has not ended yet. Revoking a revoked key changes nothing."""
    key, _ = await admin.revoke(session, actor, id_or_prefix, now=clock.now())
    return _out(key)


@router.post(
    "/{id_or_prefix}/expire",
    responses={
        **_ONE,
        409: error_schema("Revoked, or the last working admin key (`last_admin_key`)"),
    },
)
async def expire_key(
    actor: Admin, session: SessionDep, clock: ClockDep, id_or_prefix: IdOrPrefix, body: KeyExpire
) -> KeyOut:
    """Set when the key stops working (default now); it then answers `key_expired`."""
    return _out(await admin.expire(session, actor, id_or_prefix, body.expires_at, now=clock.now()))


@router.post(
    "/{id_or_prefix}/rotate",
    responses={
        **_ONE,
        409: error_schema(
            "Revoked or rotated; or a legacy staff key that would keep no scope "
            "(`legacy_staff_key`)"
        ),
    },
)
async def rotate_key(
    actor: Admin,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    id_or_prefix: IdOrPrefix,
    body: Rotate,
) -> Rotated:
    """Issue a replacement with the same settings; the old key keeps working for
    ``grace_seconds`` (0: stops now). The new secret is in this response only. A legacy
    staff key's replacement loses admin and finance (a customer's keys may not hold them).
    Audited."""
    old, new, secret = await admin.rotate(
        session,
        actor,
        request_settings(request).secret_key,
        id_or_prefix,
        timedelta(seconds=body.grace_seconds),
        now=clock.now(),
    )
    return Rotated(old=_out(old), new=_created(new, secret))
