from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response

from app.auth.deps import Finance, ProtectedRoute
from app.billing import service
from app.billing.deps import stripe_gateway
from app.billing.export import lines_csv
from app.billing.margin import (
    CostRates,
    break_even_months,
    margin_rows,
    required_monthly_revenue,
)
from app.billing.pdf import invoice_pdf as render_pdf
from app.billing.rating import RatedInvoice
from app.billing.repository import invoice_customer, revenue
from app.billing.schemas import (
    BreakEven,
    CloseOut,
    InvoiceLineOut,
    InvoiceList,
    InvoiceOut,
    InvoiceSummary,
    MarginLine,
    MarginReport,
    ReconcileLine,
    ReconcileReport,
    RevenueReport,
    SyncOut,
)
from app.billing.stripe_gateway import StripeGateway
from app.billing.sync import reconcile, sync_invoices
from app.billing.webhooks import StripeNotConfigured
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep, database
from app.errors import error_schema
from app.money.periods import Period
from app.money.pricing import minor_exponent, to_minor
from app.orm import Invoice, InvoiceLine
from app.validation import DbId

router = APIRouter(prefix="/finance", tags=["finance"], route_class=ProtectedRoute)

# An amount of money in a query: what a money column holds (below 10^14, 10 places).
_MONEY = Field(ge=0, lt=Decimal(10) ** 14, decimal_places=10)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the finance scope"),
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_schema("No such invoice")}


def _collection(invoice: Invoice, stripe_enabled: bool) -> str:
    if invoice.stripe_invoice_id is not None:
        return "stripe"
    if not stripe_enabled:
        return "local: Stripe is not configured, this invoice is not collected"
    return "local: not yet pushed to Stripe" if invoice.status == "finalized" else "local"


def _out(invoice: Invoice, lines: list[InvoiceLine], stripe_enabled: bool) -> InvoiceOut:
    return InvoiceOut(
        collection=_collection(invoice, stripe_enabled),
        id=invoice.id,
        number=invoice.number,
        customer_id=invoice.customer_id,
        period=invoice.period,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        status=invoice.status,
        currency=invoice.currency,
        subtotal_minor=invoice.subtotal_minor,
        total_minor=invoice.total_minor,
        stripe_invoice_id=invoice.stripe_invoice_id,
        stripe_status=invoice.stripe_status,
        finalized_at=invoice.finalized_at,
        lines=[InvoiceLineOut.model_validate(line, from_attributes=True) for line in lines],
    )


def _preview_out(rated: RatedInvoice) -> InvoiceOut:
    return InvoiceOut(
        id=None,
        number=None,
        customer_id=rated.customer_id,
        period=str(rated.period),
        period_start=rated.period.start,
        period_end=rated.period.end,
        status="preview",
        collection="preview: not an invoice yet",
        currency=rated.currency,
        subtotal_minor=rated.subtotal_minor,
        total_minor=rated.total_minor,
        lines=[
            InvoiceLineOut(position=i, **_line_fields(line))
            for i, line in enumerate(rated.lines, start=1)
        ],
    )


def _line_fields(line: Any) -> dict[str, Any]:
    return {name: getattr(line, name) for name in InvoiceLineOut.model_fields if name != "position"}


@router.post(
    "/periods/{period}/close",
    responses={
        **_ERRORS,
        409: error_schema("The period (plus grace) has not ended, or another close is running"),
        422: error_schema("Bad period"),
    },
)
async def close_period(
    actor: Finance, request: Request, session: SessionDep, clock: ClockDep, period: str
) -> CloseOut:
    """Write and finalize one invoice per customer for the month. Closing again is a no-op
    for the customers already invoiced. A customer whose plan cannot be priced exactly is
    listed in `not_ratable` and not invoiced; the others are."""
    grace = timedelta(hours=request_settings(request).billing_grace_hours)
    result = await service.close_period(
        session, actor, Period.parse(period), grace=grace, now=clock.now()
    )
    return CloseOut(**result.__dict__)


@router.get("/invoices", responses=_ERRORS)
async def list_invoices(
    _: Finance,
    session: SessionDep,
    customer: DbId | None = None,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
    status: Annotated[
        str | None, Query(pattern="^(draft|finalized|paid|void|uncollectible)$")
    ] = None,
) -> InvoiceList:
    """Invoices, newest first, filtered by customer, period (YYYY-MM) or status."""
    invoices = await service.list_invoices(
        session,
        customer_id=customer,
        period=Period.parse(period) if period else None,
        status=status,
    )
    return InvoiceList(
        data=[InvoiceSummary.model_validate(i, from_attributes=True) for i in invoices]
    )


@router.get(
    "/invoices/preview",
    responses={
        **_ERRORS,
        404: error_schema("No such customer, or no plan in the period"),
        409: error_schema("The customer's plan version cannot be priced exactly"),
    },
)
async def preview_invoice(
    _: Finance,
    session: SessionDep,
    clock: ClockDep,
    customer: DbId,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
) -> InvoiceOut:
    """The period's invoice to date (default: the open period), rated as closing would."""
    p = Period.parse(period) if period else Period.containing(clock.now())
    return _preview_out(await service.preview(session, customer, p))


@router.get(
    "/invoices/{invoice_id}.csv",
    responses={**_ERRORS, **_NOT_FOUND, 200: {"content": {"text/csv": {}}}},
    response_class=Response,
)
async def invoice_csv(_: Finance, session: SessionDep, invoice_id: DbId) -> Response:
    """One invoice's lines as CSV (one row per line, amounts in minor units)."""
    invoice, lines = await service.get_invoice(session, invoice_id)
    return Response(
        lines_csv((invoice, line) for line in lines),
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="{invoice.number or invoice.id}.csv"'
        },
    )


@router.get(
    "/invoices/{invoice_id}.pdf",
    responses={**_ERRORS, **_NOT_FOUND, 200: {"content": {"application/pdf": {}}}},
    response_class=Response,
)
async def invoice_pdf(_: Finance, session: SessionDep, invoice_id: DbId) -> Response:
    """One invoice as a PDF document, as sent to the customer."""
    invoice, lines = await service.get_invoice(session, invoice_id)
    customer = await invoice_customer(session, invoice)
    return Response(
        render_pdf(invoice, lines, customer),
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{invoice.number or invoice.id}.pdf"'
        },
    )


# Declared after the .csv and .pdf routes, which a bare {invoice_id} would also match.
@router.get("/invoices/{invoice_id}", responses={**_ERRORS, **_NOT_FOUND})
async def get_invoice(
    _: Finance, request: Request, session: SessionDep, invoice_id: DbId
) -> InvoiceOut:
    """One invoice with its lines, totals, status and Stripe ids."""
    invoice, lines = await service.get_invoice(session, invoice_id)
    return _out(invoice, lines, stripe_gateway(request) is not None)


@router.get(
    "/periods/{period}/lines.csv",
    responses={**_ERRORS, 200: {"content": {"text/csv": {}}}, 422: error_schema("Bad period")},
    response_class=Response,
)
async def period_csv(_: Finance, session: SessionDep, period: str) -> Response:
    """Every invoice line of a closed period (YYYY-MM) as CSV, for the ledger or a spreadsheet."""
    p = Period.parse(period)
    return Response(
        lines_csv(await service.period_lines(session, p)),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="invoice-lines-{p}.csv"'},
    )


@router.get("/reports/revenue", responses={**_ERRORS, 422: error_schema("Bad period")})
async def revenue_report(
    _: Finance, session: SessionDep, period: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")]
) -> RevenueReport:
    """Invoiced revenue (finalized and paid invoices) for a period, by plan, customer, model."""
    return await revenue(session, Period.parse(period))


@router.get("/reports/margin", responses={**_ERRORS, 422: error_schema("Bad parameters")})
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


def _gateway(request: Request) -> StripeGateway:
    gateway = stripe_gateway(request)
    if gateway is None:
        raise StripeNotConfigured(
            "TOLLGATE_STRIPE_API_KEY is not set: invoices stay local and are not collected"
        )
    return gateway


@router.post("/sync", responses={**_ERRORS, 503: error_schema("Stripe is not configured")})
async def sync_to_stripe(
    actor: Finance,
    request: Request,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
) -> SyncOut:
    """Push finalized invoices not yet in Stripe, void in Stripe the invoices voided here, and
    create the credit notes not yet in Stripe. Safe to repeat after any failure."""
    result = await sync_invoices(
        database(request).sessionmaker,
        _gateway(request),
        actor,
        Period.parse(period) if period else None,
    )
    return SyncOut(
        pushed=result.pushed,
        failed={str(k): v for k, v in result.failed.items()},
        voided=result.voided,
        credit_notes_pushed=result.credit_notes_pushed,
        credit_notes_failed={str(k): v for k, v in result.credit_notes_failed.items()},
    )


@router.get(
    "/reports/reconciliation",
    responses={**_ERRORS, 503: error_schema("Stripe is not configured")},
)
async def reconciliation(
    _: Finance,
    request: Request,
    session: SessionDep,
    period: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")],
) -> ReconcileReport:
    """Local invoice totals against Stripe's, invoice by invoice."""
    rows = await reconcile(session, _gateway(request), Period.parse(period))
    return ReconcileReport(
        period=period,
        lines=[ReconcileLine.model_validate(r, from_attributes=True) for r in rows],
        all_match=all(r.result == "match" for r in rows),
    )
