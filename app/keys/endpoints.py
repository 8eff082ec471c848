from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field

from app.auth.deps import Admin
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import error_schema
from app.keys import admin
from app.keys.schemas import Scope
from app.orm import ApiKey
from app.validation import MAX_MODEL_NAME, DbId, PerMinute, Text, Timestamp

router = APIRouter(prefix="/admin/keys", tags=["keys"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the admin scope"),
}
_ONE: dict[int | str, dict[str, Any]] = {**_ERRORS, 404: error_schema("No such key")}


class KeyCreate(BaseModel):
    customer_id: DbId
    scopes: list[Scope] = Field(min_length=1)
    name: Text | None = Field(default=None, max_length=200)
    expires_at: Timestamp | None = Field(
        default=None, description="ISO 8601; without a time zone, UTC"
    )
    allowed_models: list[Annotated[Text, Field(min_length=1, max_length=MAX_MODEL_NAME)]] | None = (
        Field(default=None, max_length=100)
    )
    requests_per_minute: PerMinute | None = None
    items_per_minute: PerMinute | None = None


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


class KeyCreated(KeyOut):
    secret: str = Field(description="Shown once; store it now")


class KeyList(BaseModel):
    data: list[KeyOut]


class Rotate(BaseModel):
    grace_seconds: int = Field(
        default=0,
        ge=0,
        le=30 * 86400,
        description="How long the old secret keeps working (0: it stops now)",
    )


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
    responses={**_ERRORS, 404: error_schema("No such customer")},
)
async def create_key(
    actor: Admin, request: Request, session: SessionDep, body: KeyCreate
) -> KeyCreated:
    key, secret = await admin.issue_key(
        session,
        actor,
        request_settings(request).secret_key,
        customer_id=body.customer_id,
        scopes=[s.value for s in body.scopes],
        name=body.name,
        expires_at=body.expires_at,
        allowed_models=body.allowed_models,
        requests_per_minute=body.requests_per_minute,
        items_per_minute=body.items_per_minute,
    )
    return _created(key, secret)


@router.get("", responses=_ERRORS)
async def list_keys(
    _: Admin, session: SessionDep, customer_id: Annotated[DbId | None, Query()] = None
) -> KeyList:
    return KeyList(data=[_out(k) for k in await admin.list_keys(session, customer_id)])


@router.get("/{key_id}", responses=_ONE)
async def get_key(_: Admin, session: SessionDep, key_id: DbId) -> KeyOut:
    return _out(await admin.get_key(session, key_id))


@router.post("/{key_id}/revoke", responses=_ONE)
async def revoke_key(actor: Admin, session: SessionDep, key_id: DbId) -> KeyOut:
    """Stops working everywhere within the key cache TTL (1 s)."""
    return _out(await admin.revoke(session, actor, key_id))


@router.post("/{key_id}/rotate", responses={**_ONE, 409: error_schema("Revoked or rotated")})
async def rotate_key(
    actor: Admin, request: Request, session: SessionDep, key_id: DbId, body: Rotate
) -> Rotated:
    old, new, secret = await admin.rotate(
        session,
        actor,
        request_settings(request).secret_key,
        key_id,
        timedelta(seconds=body.grace_seconds),
    )
    return Rotated(old=_out(old), new=_created(new, secret))
