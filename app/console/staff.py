"""Pages of the operator's staff (admin and finance keys of the operator account): the
overview here; customers, keys, plans, models and the audit log in ``staff_*`` modules,
whose routers join this one (so ``app.main`` registers one router for all of them)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.billing.repository import revenue_totals
from app.clock.deps import ClockDep
from app.console import staff_audit, staff_customers, staff_keys, staff_models, staff_plans
from app.console.deps import Staff
from app.console.staff_common import chart
from app.console.web import render
from app.db.memo import settled, settled_before
from app.db.session import SessionDep
from app.metering.repository import ModelTotals, billable_totals, totals_by_day
from app.money.periods import Period

router = APIRouter(prefix="/console", include_in_schema=False)

OVERVIEW_DAYS = 30


def day_labels(last: date, days: int) -> list[str]:
    """``days`` dates (ISO) up to and including ``last``."""
    return [(last - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


async def _month_to_date(
    session: AsyncSession, start: datetime, now: datetime
) -> list[ModelTotals]:
    """Billable totals per model and variant since ``start``: the settled days once, the
    rest live."""
    boundary = max(start, settled_before(now))
    past = await settled(
        session,
        ("overview.billable", start, boundary),
        lambda: billable_totals(session, start, boundary),
    )
    summed: dict[tuple[str, str], list[int]] = {}
    for t in (*past, *await billable_totals(session, boundary, now)):
        row = summed.setdefault((t.model, t.variant), [0, 0, 0])
        row[0] += t.requests
        row[1] += t.items
        row[2] += t.compute_us
    return [ModelTotals(model, variant, *row) for (model, variant), row in summed.items()]


@router.get("/")
async def overview(request: Request, user: Staff, session: SessionDep, clock: ClockDep) -> Response:
    """Requests, items, errors and billable requests over the last 30 days, by day; revenue
    per currency (invoiced this month and last) and billable usage month to date. Every
    figure is one SQL aggregate over all customers."""
    now = clock.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=OVERVIEW_DAYS - 1)
    # Days that ended before now - SETTLED are final: read once per process, today live.
    boundary = max(start, min(settled_before(now), now))
    past = await settled(
        session,
        ("overview.by_day", start, boundary),
        lambda: totals_by_day(session, start, boundary),
    )
    by_day = {d.day: d for d in (*past, *await totals_by_day(session, boundary, now))}
    labels = day_labels(today.date(), OVERVIEW_DAYS)
    rows = [by_day.get(day) for day in labels]
    series = {
        "requests": [r.requests if r else 0 for r in rows],
        "billable": [r.billable_requests if r else 0 for r in rows],
        "errors": [r.errors if r else 0 for r in rows],
        "items": [r.items if r else 0 for r in rows],
    }
    period = Period.containing(now)
    previous = Period.containing(period.start - timedelta(days=1))
    this_month = await revenue_totals(session, period)
    last_month = await revenue_totals(session, previous)
    billable = sorted(await _month_to_date(session, period.start, now), key=lambda t: t.ref)
    return render(
        request,
        "staff/overview.html",
        {
            "user": user,
            "days": OVERVIEW_DAYS,
            "totals": {name: sum(values) for name, values in series.items()},
            "requests_chart": chart(
                labels,
                [
                    {"label": "requests", "data": series["requests"]},
                    {"label": "billable requests", "data": series["billable"]},
                    {"label": "errors", "data": series["errors"]},
                ],
            ),
            "items_chart": chart(labels, [{"label": "items", "data": series["items"]}]),
            "period": period,
            "previous": previous,
            "revenue_now": this_month,
            "revenue_previous": last_month,
            "billable": billable,
        },
    )


for _area in (staff_customers, staff_keys, staff_plans, staff_models, staff_audit):
    router.include_router(_area.router)
