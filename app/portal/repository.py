"""Reads of one customer's plan assignments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.orm import CustomerPlan, Plan, PlanVersion


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
