"""Key lifecycle for admins: issue, list, revoke, rotate. Every write is audited; the secret
exists only in the response that creates it."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record, snapshot
from app.customers.errors import CustomerNotFound
from app.errors import AppError, NotFound
from app.keys import repository
from app.keys.service import issue_key_record
from app.orm import ApiKey, Customer

FIELDS = (
    "customer_id",
    "name",
    "prefix",
    "last_four",
    "scopes",
    "allowed_models",
    "requests_per_minute",
    "items_per_minute",
    "expires_at",
    "revoked_at",
    "replaced_by",
)


class KeyNotFound(NotFound):
    type = "key_not_found"


class KeyConflict(AppError):
    status_code = 409
    type = "key_conflict"


async def issue_key(
    session: AsyncSession,
    actor: Actor,
    secret_key: str,
    *,
    customer_id: int,
    scopes: list[str],
    name: str | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    requests_per_minute: int | None = None,
    items_per_minute: int | None = None,
) -> tuple[ApiKey, str]:
    if await session.get(Customer, customer_id) is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist")
    key, secret = await issue_key_record(
        session,
        secret_key,
        customer_id=customer_id,
        scopes=scopes,
        name=name,
        expires_at=expires_at,
        allowed_models=allowed_models,
        requests_per_minute=requests_per_minute,
        items_per_minute=items_per_minute,
    )
    await record(session, actor, "key.create", "api_key", key.id, after=snapshot(key, *FIELDS))
    return key, secret


async def get_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise KeyNotFound(f"key {key_id} does not exist")
    return key


async def list_keys(session: AsyncSession, customer_id: int | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id)
    if customer_id is not None:
        stmt = stmt.where(ApiKey.customer_id == customer_id)
    return list(await session.scalars(stmt))


async def revoke(session: AsyncSession, actor: Actor, key_id: int, *, now: datetime) -> ApiKey:
    key = await get_key(session, key_id)
    if key.revoked_at is not None and key.revoked_at <= now:
        return key  # already revoked: nothing to change or record
    before = snapshot(key, *FIELDS)
    key.revoked_at = now
    await session.flush()
    await record(
        session, actor, "key.revoke", "api_key", key.id, before=before, after=snapshot(key, *FIELDS)
    )
    return key


async def rotate(
    session: AsyncSession,
    actor: Actor,
    secret_key: str,
    key_id: int,
    grace: timedelta,
    *,
    now: datetime,
) -> tuple[ApiKey, ApiKey, str]:
    """A new secret with the same customer, scopes, models, limits and expiry. The old key
    keeps working until now + grace, then stops (its ``revoked_at`` is set to that time)."""
    old = await get_key(session, key_id)
    if old.revoked_at is not None and old.revoked_at <= now:
        raise KeyConflict("a revoked key cannot be rotated")
    if old.replaced_by is not None:
        raise KeyConflict(f"key {key_id} was already rotated to key {old.replaced_by}")
    new, secret = await issue_key_record(
        session,
        secret_key,
        customer_id=old.customer_id,
        scopes=old.scopes,
        name=old.name,
        expires_at=old.expires_at,
        allowed_models=old.allowed_models,
        requests_per_minute=old.requests_per_minute,
        items_per_minute=old.items_per_minute,
    )
    before = snapshot(old, *FIELDS)
    if not await repository.mark_rotated(session, old.id, new.id, now, now + grace):
        # Lost a race with a concurrent rotate or revoke; the transaction (and the key
        # just issued) is rolled back.
        raise KeyConflict(f"key {key_id} was rotated or revoked by a concurrent request")
    await session.refresh(old)
    await record(
        session,
        actor,
        "key.rotate",
        "api_key",
        old.id,
        before=before,
        after={**snapshot(old, *FIELDS), "new_key_id": new.id},
    )
    return old, new, secret
