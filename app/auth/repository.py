"""Key look-up for authentication: hash -> key, customer status and current plan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import PlanSnapshot
from app.money.pricing import PriceComponent
from app.orm import ApiKey, Customer, CustomerPlan, PlanVersion


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
    is_operator: bool = False
    legacy_staff: bool = False
    requests_per_minute: int | None = None
    items_per_minute: int | None = None
    plan: PlanSnapshot | None = None


async def find_by_hash(session: AsyncSession, key_hash: str, now: datetime) -> KeyRecord | None:
    """The key with this hash, its customer's status and operator flag, and the plan in
    force at ``now``."""
    row = (
        await session.execute(
            select(ApiKey, Customer.status, Customer.is_operator)
            .join(Customer, Customer.id == ApiKey.customer_id)
            .where(ApiKey.hash == key_hash)
        )
    ).first()
    if row is None:
        return None
    key, status, is_operator = row
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
        is_operator=bool(is_operator),
        legacy_staff=bool(key.legacy_staff),
        requests_per_minute=key.requests_per_minute,
        items_per_minute=key.items_per_minute,
        plan=await current_plan(session, key.customer_id, now),
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
