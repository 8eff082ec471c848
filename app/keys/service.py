"""Issuing keys: a fresh secret, stored only as its HMAC hash."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.secrets import generate_key, hash_key, public_prefix
from app.customers.repository import get_or_create_customer
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
) -> CreatedKey:
    """Create a key for a customer (created if missing), without an audit row: a factory for
    tests and benchmarks. Admin writes (API and CLI) go through ``app.keys.admin``, which
    records each one. The secret is returned only here."""
    customer = await get_or_create_customer(session, customer_name)
    key, secret = await issue_key_record(
        session,
        secret_key,
        customer_id=customer.id,
        scopes=scopes,
        name=name,
        expires_at=expires_at,
        allowed_models=allowed_models,
    )
    return CreatedKey(
        key_id=key.id,
        customer_id=customer.id,
        prefix=key.prefix,
        secret=secret,
        scopes=tuple(key.scopes),
        expires_at=expires_at,
    )
