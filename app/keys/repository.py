from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import ApiKey, Customer


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: int
    customer_id: int
    prefix: str
    hash: str
    scopes: tuple[str, ...]
    allowed_models: tuple[str, ...] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    customer_status: str


async def find_by_hash(session: AsyncSession, key_hash: str) -> KeyRecord | None:
    row = (
        await session.execute(
            select(ApiKey, Customer.status)
            .join(Customer, Customer.id == ApiKey.customer_id)
            .where(ApiKey.hash == key_hash)
        )
    ).first()
    if row is None:
        return None
    key, status = row
    return KeyRecord(
        key_id=key.id,
        customer_id=key.customer_id,
        prefix=key.prefix,
        hash=key.hash,
        scopes=tuple(key.scopes),
        allowed_models=tuple(key.allowed_models) if key.allowed_models is not None else None,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        customer_status=status,
    )


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def revoke_by_prefix(session: AsyncSession, prefix: str, when: datetime) -> int:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=when)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
