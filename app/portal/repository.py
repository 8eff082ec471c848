"""Reads of one customer's own records: plan assignments, issued invoices, keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import ApiKey, CustomerPlan, Invoice, Plan, PlanVersion


async def plan_assignments(
    session: AsyncSession, customer_id: int
) -> list[tuple[datetime, Plan, PlanVersion]]:
    """Every assignment of the customer, in the order they take effect (ties: the later
    assignment wins, as in rating)."""
    rows = await session.execute(
        select(CustomerPlan.effective_from, Plan, PlanVersion)
        .join(PlanVersion, PlanVersion.id == CustomerPlan.plan_version_id)
        .join(Plan, Plan.id == PlanVersion.plan_id)
        .where(CustomerPlan.customer_id == customer_id)
        .order_by(CustomerPlan.effective_from, CustomerPlan.id)
    )
    return [(effective_from, plan, version) for effective_from, plan, version in rows.all()]


async def invoices_page(
    session: AsyncSession,
    customer_id: int,
    statuses: Sequence[str],
    *,
    offset: int,
    limit: int,
) -> tuple[list[Invoice], int]:
    """The customer's invoices in ``statuses``, newest period first, one page of them, and
    how many there are in all (on the ``customer_id`` index)."""
    where = (Invoice.customer_id == customer_id, Invoice.status.in_(statuses))
    total = await session.scalar(select(func.count()).select_from(Invoice).where(*where))
    rows = await session.scalars(
        select(Invoice)
        .where(*where)
        .order_by(Invoice.period.desc(), Invoice.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), int(total or 0)


async def keys_page(
    session: AsyncSession, customer_id: int, *, offset: int, limit: int
) -> tuple[list[ApiKey], int]:
    """The customer's keys, oldest first, one page of them, and how many there are."""
    total = await session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.customer_id == customer_id)
    )
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.customer_id == customer_id)
        .order_by(ApiKey.id)
        .offset(offset)
        .limit(limit)
    )
    return list(rows), int(total or 0)
