"""The finance reports: invoiced revenue, and margin with a break-even view."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from app.auth.deps import Finance, ProtectedRoute
from app.billing.margin import BreakEvenInput, CostModel
from app.billing.margin import margin_report as build_margin_report
from app.billing.report_schemas import MarginReport, RevenueReport
from app.billing.repository import revenue
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep
from app.errors import error_schema
from app.money.periods import Period

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
    clock: ClockDep,
    period: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")],
    investment: Annotated[Decimal, Query(description="One-off investment C"), _MONEY] = Decimal(0),
    yearly_upkeep: Annotated[
        Decimal, Query(description="Yearly upkeep M, a running cost"), _MONEY
    ] = Decimal(0),
    horizon_months: Annotated[
        int, Query(ge=1, le=1200, description="Horizon H to recover C, in months")
    ] = 12,
    currency: Annotated[
        str | None,
        Query(
            pattern="^[A-Za-z]{3}$",
            description="Currency of C and M (default: the cost currency)",
        ),
    ] = None,
) -> MarginReport:
    """Revenue against compute and fixed costs, by model and plan, with a break-even view,
    in one section per currency (revenue is never converted or dropped).

    Cost: each ledger row's device time at its currency's hourly rate (the currency of the
    plan its customer was on; customers without a plan: the cost currency, plan key
    `(no plan)`), plus fixed monthly costs. The cost currency's rates are
    `TOLLGATE_COST_GPU_HOUR`/`_CPU_HOUR`/`_FIXED_MONTHLY`, other currencies' come from
    `TOLLGATE_COST_RATES`; a currency without rates has cost, margin and break-even null and
    a `note`. `by_model` uses the revenue report's keys; work no invoice charges for (failed
    requests, customers without a plan) costs under `(not billed)`.

    Break-even, per section: with the one-off investment C, yearly upkeep M (a running cost,
    M/12 a month), the period's revenue R and operating cost O: payback `months` =
    C / (R - O - M/12), null when R - O - M/12 <= 0; `required_monthly_revenue` =
    O + M/12 + C/H, the monthly revenue that pays the running costs and recovers C within H
    months. C and M are in `currency` and apply to that section; the other sections use
    C = M = 0."""
    settings = request_settings(request)
    costs = CostModel.from_settings(settings)
    given = BreakEvenInput(
        currency=currency.lower() if currency else costs.currency,
        investment=investment,
        yearly_upkeep=yearly_upkeep,
        horizon_months=horizon_months,
    )
    return await build_margin_report(session, Period.parse(period), costs, given, now=clock.now())
