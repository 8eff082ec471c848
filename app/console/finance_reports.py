"""The finance reports page: revenue, margin and break-even for a period, as tables and
charts. The numbers are the API's: ``app.billing.repository.revenue`` (``GET
/finance/reports/revenue``) and ``app.billing.margin.margin_report`` with the cost model of
the settings (``GET /finance/reports/margin``); this module only reads the form and shapes
the charts (Chart.js specs, drawn by console.js from ``<canvas data-chart>``)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import Field, TypeAdapter, ValidationError
from starlette.responses import Response

from app.billing.margin import BreakEvenInput, CostModel, margin_report
from app.billing.report_schemas import MarginReport, RevenueReport
from app.billing.repository import invoiced_customers, revenue, revenue_revision
from app.clock.deps import ClockDep
from app.config import request_settings
from app.console.deps import FinanceUser
from app.console.web import render
from app.db.memo import settled
from app.db.session import SessionDep
from app.errors import AppError
from app.money.periods import Period

# Joins ``app.console.finance.router``, which adds the /console prefix.
router = APIRouter(include_in_schema=False)

# What GET /finance/reports/margin accepts for C, M and H.
_MONEY = TypeAdapter(Annotated[Decimal, Field(ge=0, lt=Decimal(10) ** 14, decimal_places=10)])
_HORIZON = TypeAdapter(Annotated[int, Field(ge=1, le=1200)])


def _number(amount: str | None) -> float:
    """A decimal string as a chart's number (charts only: tables show the exact strings)."""
    return float(Decimal(amount)) if amount is not None else 0.0


def revenue_chart(report: RevenueReport) -> dict[str, Any]:
    """Revenue by model, one dataset per currency."""
    labels = sorted({row.key for row in report.by_model})
    currencies = sorted({row.currency for row in report.by_model})
    amounts = {(row.key, row.currency): _number(row.amount) for row in report.by_model}
    return {
        "type": "bar",
        "labels": labels,
        "datasets": [
            {"label": c.upper(), "data": [amounts.get((key, c), 0.0) for key in labels]}
            for c in currencies
        ],
    }


def margin_charts(report: MarginReport) -> dict[str, dict[str, Any]]:
    """Per currency: revenue, cost and margin by model (cost and margin only with rates)."""
    charts = {}
    for section in report.sections:
        if not section.by_model:
            continue
        rows = section.by_model
        datasets = [{"label": "revenue", "data": [_number(r.revenue) for r in rows]}]
        if section.cost_rates is not None:
            datasets.append({"label": "cost", "data": [_number(r.cost) for r in rows]})
            datasets.append({"label": "margin", "data": [_number(r.margin) for r in rows]})
        charts[section.currency] = {
            "type": "bar",
            "labels": [r.key for r in rows],
            "datasets": datasets,
        }
    return charts


# The page lists the largest customers; the API report and the period CSV have them all.
TOP_CUSTOMERS = 25


@router.get("/reports")
async def reports(
    request: Request,
    user: FinanceUser,
    session: SessionDep,
    clock: ClockDep,
    period: str = "",
    investment: str = "0",
    yearly_upkeep: str = "0",
    horizon_months: str = "12",
    currency: str = "",
) -> Response:
    """Revenue, margin and break-even of a period (default: last month)."""
    costs = CostModel.from_settings(request_settings(request))
    last = Period.containing(Period.containing(clock.now()).start - timedelta(days=1))
    form = {
        "period": period.strip()[:7] or str(last),
        "investment": investment.strip()[:40] or "0",
        "yearly_upkeep": yearly_upkeep.strip()[:40] or "0",
        "horizon_months": horizon_months.strip()[:6] or "12",
        "currency": (currency.strip()[:3] or costs.currency).lower(),
    }
    context: dict[str, Any] = {"user": user, "form": form}
    errors = []
    try:
        p = Period.parse(form["period"])
    except AppError as exc:
        errors.append(exc.message)
    values: dict[str, Any] = {}
    for name, adapter in (
        ("investment", _MONEY),
        ("yearly_upkeep", _MONEY),
        ("horizon_months", _HORIZON),
    ):
        try:
            values[name] = adapter.validate_python(form[name] or "0")
        except ValidationError as exc:
            errors.append(f"{name.replace('_', ' ')}: {exc.errors()[0]['msg']}")
    if not (len(form["currency"]) == 3 and form["currency"].isalpha()):
        errors.append("currency: a three-letter code such as EUR")
    if errors:
        context["errors"] = errors
        return render(request, "finance/reports.html", context, 422)
    given = BreakEvenInput(currency=form["currency"], **values)
    # Memoized under the period's revision: any close, payment, void or credit note changes it.
    revision = await revenue_revision(session, p)
    income = await settled(
        session,
        ("console.revenue", str(p), TOP_CUSTOMERS, revision),
        lambda: revenue(session, p, top_customers=TOP_CUSTOMERS),
    )
    customers = await invoiced_customers(session, p)
    margin = await margin_report(session, p, costs, given, now=clock.now(), income=income)
    top = income.by_customer
    context.update(
        revenue=income,
        top_customers=top,
        more_customers=max(0, customers - len(top)),
        margin=margin,
        revenue_chart=revenue_chart(income),
        margin_charts=margin_charts(margin),
    )
    return render(request, "finance/reports.html", context)
