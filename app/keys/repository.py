from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, cast, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import ApiKey, Customer


async def add_key(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def get_by_prefix(session: AsyncSession, prefix: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))


async def other_live_admin_keys(session: AsyncSession, key_id: int, now: datetime) -> int:
    """How many other keys could still act as admin at ``now``: not revoked, not expired,
    of an active customer, with the admin scope, and of the operator account (or a legacy
    staff key). Their rows are locked (Postgres) until
    commit, so two admins revoking each other's last keys at once take turns, and the second
    sees the first's revocation."""
    rows = await session.execute(
        select(ApiKey.id, ApiKey.scopes)
        .join(Customer, Customer.id == ApiKey.customer_id)
        .where(
            ApiKey.id != key_id,
            Customer.status == "active",
            or_(Customer.is_operator, ApiKey.legacy_staff),
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            # scopes is a JSON list: a text match narrows, the list test decides
            cast(ApiKey.scopes, String).like('%"admin"%'),
        )
        .with_for_update(of=ApiKey)
    )
    return sum(1 for _, scopes in rows if "admin" in scopes)


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


async def live_legacy_staff_keys(session: AsyncSession, now: datetime) -> list[str]:
    """The prefixes of the legacy staff keys that still work at ``now`` (not revoked, not
    expired): admin or finance keys of customers that are not the operator account."""
    rows = await session.scalars(
        select(ApiKey.prefix)
        .where(
            ApiKey.legacy_staff,
            or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
        )
        .order_by(ApiKey.id)
    )
    return list(rows)
