"""The audit log page: every admin and finance write, newest first, with filters."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.audit import service
from app.console.deps import AdminUser
from app.console.staff_common import PageNumber, Pager
from app.console.web import render
from app.db.session import SessionDep
from app.orm.base import as_utc

router = APIRouter(include_in_schema=False)

Filter = Annotated[str | None, Query(max_length=200)]
Day = Annotated[date | None, Query(ge=date(1970, 1, 1), le=date(8999, 12, 31))]


def _day_start(day: date | None) -> datetime | None:
    return None if day is None else as_utc(datetime.combine(day, time()))


@router.get("/audit")
async def audit(
    request: Request,
    user: AdminUser,
    session: SessionDep,
    page: PageNumber = 1,
    action: Filter = None,
    target_type: Filter = None,
    actor: Filter = None,
    since: Day = None,
    until: Day = None,
) -> Response:
    """The audit search of ``GET /admin/audit``, 50 a page. ``since`` and ``until`` are UTC
    dates, both included."""
    start = _day_start(since)
    end = _day_start(until + timedelta(days=1)) if until else None
    total = await service.count(
        session,
        action=action or None,
        target_type=target_type or None,
        actor=actor or None,
        since=start,
        until=end,
    )
    pager = Pager(request, page, total)
    rows = await service.search(
        session,
        action=action or None,
        target_type=target_type or None,
        actor=actor or None,
        since=start,
        until=end,
        offset=pager.offset,
        limit=pager.per_page,
    )
    return render(
        request,
        "staff/audit.html",
        {
            "user": user,
            "rows": rows,
            "pager": pager,
            "form": {
                "action": action or "",
                "target_type": target_type or "",
                "actor": actor or "",
                "since": since.isoformat() if since else "",
                "until": until.isoformat() if until else "",
            },
        },
    )
