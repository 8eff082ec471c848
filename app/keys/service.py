"""Issuing keys: a fresh secret, stored only as its HMAC hash."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import STAFF_SCOPES
from app.auth.secrets import generate_key, hash_key, public_prefix
from app.customers.repository import get_operator, get_or_create_customer
from app.keys import repository
from app.keys.schemas import CreatedKey, Scope
from app.orm import ApiKey


async def issue_key_record(
    session: AsyncSession,
    secret_key: str,
    *,
    customer_id: int,
    scopes: Iterable[Scope | str],
    name: str | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    requests_per_minute: int | None = None,
    items_per_minute: int | None = None,
    legacy_staff: bool = False,
) -> tuple[ApiKey, str]:
    scope_list = sorted({Scope(s).value for s in scopes})
    if not scope_list:
        raise ValueError("a key needs at least one scope")
    secret = generate_key()
    key = await repository.add_key(
        session,
        ApiKey(
            customer_id=customer_id,
            name=name,
            prefix=public_prefix(secret),
            last_four=secret[-4:],
            hash=hash_key(secret_key, secret),
            scopes=scope_list,
            allowed_models=allowed_models,
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            items_per_minute=items_per_minute,
            legacy_staff=legacy_staff,
        ),
    )
    return key, secret


async def create_key(
    session: AsyncSession,
    secret_key: str,
    *,
    customer_name: str,
    scopes: Iterable[Scope],
    name: str | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    legacy_staff: bool = False,
) -> CreatedKey:
    """Create a key for a customer (created if missing), without an audit row: a factory for
    tests and benchmarks. Admin writes (API and CLI) go through ``app.keys.admin``, which
    records each one and enforces who may hold what. The secret is returned only here.

    A key with admin or finance is staff's, so it belongs to the operator account: the
    existing one whatever ``customer_name`` says, or else the customer ``customer_name``,
    made the operator account. ``legacy_staff``: instead, a key of ``customer_name`` marked
    as the migration marks staff keys of customers issued before operator accounts."""
    scopes = list(scopes)
    staff = {Scope(s).value for s in scopes} & STAFF_SCOPES
    operator = await get_operator(session) if staff and not legacy_staff else None
    customer = operator or await get_or_create_customer(session, customer_name)
    if staff and not legacy_staff and not customer.is_operator:
        customer.is_operator = True
        await session.flush()
    key, secret = await issue_key_record(
        session,
        secret_key,
        customer_id=customer.id,
        scopes=scopes,
        name=name,
        expires_at=expires_at,
        allowed_models=allowed_models,
        legacy_staff=legacy_staff,
    )
    return CreatedKey(
        key_id=key.id,
        customer_id=customer.id,
        prefix=key.prefix,
        secret=secret,
        scopes=tuple(key.scopes),
        expires_at=expires_at,
    )
