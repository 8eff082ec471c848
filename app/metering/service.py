"""A customer's usage report over a time range: what ``/v1/usage`` and ``/v1/billing/usage``
answer alike."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Unprocessable
from app.metering.repository import usage_buckets, usage_cells
from app.metering.schemas import GroupBy, UsageBreakdown, UsageBucket, UsageReport

MAX_RANGE = timedelta(days=400)


def _range(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    end_at = end or now
    start_at = start or end_at - timedelta(days=30)
    if start_at >= end_at:
        raise Unprocessable("start must be before end")
    if end_at - start_at > MAX_RANGE:
        raise Unprocessable(f"the range may span at most {MAX_RANGE.days} days")
    return start_at, end_at


async def usage_report(
    session: AsyncSession,
    customer_id: int,
    start: datetime | None,
    end: datetime | None,
    group_by: GroupBy,
    *,
    now: datetime,
) -> UsageReport:
    """The customer's usage in [start, end) (default: the 30 days up to ``now``), grouped by
    UTC day or by model, with totals. 422 for an empty or reversed range, or one over
    400 days."""
    start_at, end_at = _range(start, end, now)
    data = await usage_buckets(session, customer_id, start_at, end_at, group_by)
    compute_us = sum(b.compute_us for b in data)  # exact; a float sum depends on grouping
    total = UsageBucket(
        key="total",
        requests=sum(b.requests for b in data),
        billable_requests=sum(b.billable_requests for b in data),
        errors=sum(b.errors for b in data),
        items=sum(b.items for b in data),
        compute_us=compute_us,
        compute_ms=compute_us / 1000,
    )
    return UsageReport(
        customer_id=customer_id,
        start=start_at,
        end=end_at,
        group_by=group_by,
        data=data,
        total=total,
    )


async def usage_breakdown(
    session: AsyncSession,
    customer_id: int,
    start: datetime | None,
    end: datetime | None,
    *,
    now: datetime,
) -> UsageBreakdown:
    """The customer's usage in [start, end) (default: the 30 days up to ``now``) by UTC day,
    model and variant: what the usage report counts, one level finer (the console's chart
    stacks it by model and variant). The same 422s as :func:`usage_report`."""
    start_at, end_at = _range(start, end, now)
    cells = await usage_cells(session, customer_id, start_at, end_at)
    return UsageBreakdown(customer_id=customer_id, start=start_at, end=end_at, cells=cells)
