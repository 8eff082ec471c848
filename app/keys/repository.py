from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import ApiKey


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def get_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))


async def mark_rotated(
    session: AsyncSession, key_id: int, new_key_id: int, now: datetime, revoke_at: datetime
) -> bool:
    """Link ``key_id`` to its successor and schedule its revocation, only if it is still
    live and not yet rotated. A conditional UPDATE, so of concurrent rotations exactly one
    wins: on Postgres the others wait for its row lock and then match nothing; SQLite runs
    writers one at a time. False: another request rotated or revoked the key first."""
    result = await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.replaced_by.is_(None),
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now),
        )
        .values(replaced_by=new_key_id, revoked_at=revoke_at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]
