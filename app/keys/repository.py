from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.pricing import PriceComponent
from app.keys.schemas import PlanSnapshot
from app.orm import ApiKey, Customer, CustomerPlan, PlanVersion
from app.orm.base import utcnow


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
    requests_per_minute: int | None = None
    items_per_minute: int | None = None
    plan: PlanSnapshot | None = None


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
        requests_per_minute=key.requests_per_minute,
        items_per_minute=key.items_per_minute,
        plan=await current_plan(session, key.customer_id, utcnow()),
    )


async def current_plan(
    session: AsyncSession, customer_id: int, now: datetime
) -> PlanSnapshot | None:
    row = (
        await session.execute(
            select(CustomerPlan.effective_from, PlanVersion)
            .join(PlanVersion, PlanVersion.id == CustomerPlan.plan_version_id)
            .where(CustomerPlan.customer_id == customer_id, CustomerPlan.effective_from <= now)
            .order_by(CustomerPlan.effective_from.desc(), CustomerPlan.id.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    effective_from, version = row
    return PlanSnapshot(
        plan_version_id=version.id,
        currency=version.currency,
        components=tuple(PriceComponent.from_dict(c) for c in version.components),
        spend_cap=version.spend_cap,
        requests_per_minute=version.requests_per_minute,
        items_per_minute=version.items_per_minute,
        effective_from=effective_from,
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
