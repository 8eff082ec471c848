from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import Authenticated, ProtectedRoute
from app.clock.deps import ClockDep
from app.db.session import SessionDep
from app.errors import error_schema
from app.metering.schemas import GroupBy, UsageReport
from app.metering.service import usage_report
from app.validation import Timestamp

router = APIRouter(prefix="/v1", tags=["usage"], route_class=ProtectedRoute)


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
    return await usage_report(session, principal.customer_id, start, end, group_by, now=clock.now())
