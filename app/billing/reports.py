"""The finance reports: invoiced revenue, and margin with a break-even view."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from app.auth.deps import Finance, ProtectedRoute
from app.billing.margin import (
    CostRates,
    break_even_months,
    margin_rows,
    required_monthly_revenue,
)
from app.billing.report_schemas import BreakEven, MarginLine, MarginReport, RevenueReport
from app.billing.repository import revenue
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import error_schema
from app.money.periods import Period
from app.money.pricing import minor_exponent, to_minor

router = APIRouter(prefix="/finance/reports", tags=["finance"], route_class=ProtectedRoute)

# An amount of money in a query: what a money column holds (below 10^14, 10 places).
_MONEY = Field(ge=0, lt=Decimal(10) ** 14, decimal_places=10)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the finance scope"),
}


@router.get("/revenue", responses={**_ERRORS, 422: error_schema("Bad period")})
async def revenue_report(
    _: Finance, session: SessionDep, period: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")]
) -> RevenueReport:
    """Invoiced revenue (finalized and paid invoices) for a period, by plan, customer, model."""
    return await revenue(session, Period.parse(period))


@router.get("/margin", responses={**_ERRORS, 422: error_schema("Bad parameters")})
async def margin_report(
    _: Finance,
    request: Request,
    session: SessionDep,
    period: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")],
    investment: Annotated[Decimal, Query(description="Fixed investment C"), _MONEY] = Decimal(0),
    yearly_upkeep: Annotated[Decimal, Query(description="Yearly upkeep M"), _MONEY] = Decimal(0),
    horizon_months: Annotated[
        int, Query(ge=1, le=1200, description="Horizon H to recover C, in months")
    ] = 12,
) -> MarginReport:
    """Revenue against compute and fixed costs, by model and plan, with a break-even view.
    With the one-off investment C, yearly upkeep M (a running cost, M/12 a month), the
    period's revenue R and operating cost O: payback `months` = C / (R - O - M/12), null when
    R - O - M/12 <= 0; `required_monthly_revenue` = O + M/12 + C/H, the monthly revenue that
    pays the running costs and recovers C within H months."""
    settings = request_settings(request)
    rates = CostRates(
        settings.cost_currency,
        settings.cost_gpu_hour,
        settings.cost_cpu_hour,
        settings.cost_fixed_monthly,
    )
    p = Period.parse(period)
    by_model, by_plan = await margin_rows(session, p, rates)
    currency = rates.currency

    def lines(rows: dict[str, Any]) -> list[MarginLine]:
        out = []
        for key in sorted(rows):
            row = rows[key]
            cost = to_minor(row.cost, currency)
            out.append(
                MarginLine(
                    key=key,
                    revenue_minor=row.revenue_minor,
                    compute_seconds=row.compute_seconds,
                    cost_minor=cost,
                    margin_minor=row.revenue_minor - cost,
                )
            )
        return out

    revenue = sum(r.revenue_minor for r in by_model.values())
    compute = to_minor(sum((r.cost for r in by_model.values()), Decimal(0)), currency)
    fixed = to_minor(rates.fixed_monthly, currency)
    operating = compute + fixed
    return MarginReport(
        period=str(p),
        currency=currency,
        revenue_minor=revenue,
        compute_cost_minor=compute,
        fixed_cost_minor=fixed,
        operating_cost_minor=operating,
        margin_minor=revenue - operating,
        by_model=lines(by_model),
        by_plan=lines(by_plan),
        break_even=BreakEven(
            investment=investment,
            yearly_upkeep=yearly_upkeep,
            monthly_revenue_minor=revenue,
            monthly_operating_cost_minor=operating,
            months=break_even_months(
                investment,
                yearly_upkeep,
                Decimal(revenue).scaleb(-minor_exponent(currency)),
                Decimal(operating).scaleb(-minor_exponent(currency)),
            ),
            horizon_months=horizon_months,
            required_monthly_revenue_minor=to_minor(
                required_monthly_revenue(
                    investment,
                    yearly_upkeep,
                    Decimal(operating).scaleb(-minor_exponent(currency)),
                    horizon_months,
                ),
                currency,
            ),
        ),
    )
