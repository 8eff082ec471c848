from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import Authenticated, ProtectedRoute
from app.clock.deps import ClockDep
from app.db.session import SessionDep
from app.errors import Unprocessable, error_schema
from app.metering.repository import usage_buckets
from app.metering.schemas import GroupBy, UsageBucket, UsageReport
from app.validation import Timestamp

router = APIRouter(prefix="/v1", tags=["usage"], route_class=ProtectedRoute)

_MAX_RANGE = timedelta(days=400)


@router.get(
    "/usage",
    responses={
        401: error_schema("Missing or invalid API key"),
        422: error_schema("Bad time range or grouping"),
    },
)
async def get_usage(
    principal: Authenticated,
    session: SessionDep,
    clock: ClockDep,
    start: Annotated[
        Timestamp | None,
        Query(description="Inclusive, ISO 8601 (UTC without a time zone); default: 30 days ago"),
    ] = None,
    end: Annotated[
        Timestamp | None,
        Query(description="Exclusive, ISO 8601 (UTC without a time zone); default: now"),
    ] = None,
    group_by: GroupBy = GroupBy.day,
) -> UsageReport:
    """The calling key's own customer's usage, grouped by UTC day or by model."""
    end_at = end or clock.now()
    start_at = start or end_at - timedelta(days=30)
    if start_at >= end_at:
        raise Unprocessable("start must be before end")
    if end_at - start_at > _MAX_RANGE:
        raise Unprocessable(f"the range may span at most {_MAX_RANGE.days} days")
    data = await usage_buckets(session, principal.customer_id, start_at, end_at, group_by)
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
        customer_id=principal.customer_id,
        start=start_at,
        end=end_at,
        group_by=group_by,
        data=data,
        total=total,
    )
