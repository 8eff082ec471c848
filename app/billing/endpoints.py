from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.auth.deps import Finance, ProtectedRoute
from app.billing import service
from app.billing.deps import stripe_gateway
from app.billing.export import lines_csv
from app.billing.parties import SellerSnapshot, seller_snapshot
from app.billing.pdf import invoice_pdf as render_pdf
from app.billing.repository import invoice_customer
from app.billing.schemas import (
    CloseOut,
    InvoiceList,
    InvoiceOut,
    ReconcileLine,
    ReconcileReport,
    SyncOut,
    close_out,
    draft_out,
    invoice_out,
    invoice_summary,
)
from app.billing.stripe_gateway import StripeGateway
from app.billing.sync import reconcile, sync_invoices
from app.billing.webhooks import StripeNotConfigured
from app.clock.deps import ClockDep
from app.config import request_settings
from app.db.session import SessionDep, database
from app.errors import error_schema
from app.money.periods import Period
from app.orm import Invoice, InvoiceLine
from app.validation import DbId

router = APIRouter(prefix="/finance", tags=["finance"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the finance scope"),
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_schema("No such invoice")}


def _out(invoice: Invoice, lines: list[InvoiceLine], stripe_enabled: bool) -> InvoiceOut:
    return invoice_out(invoice, lines, stripe_enabled=stripe_enabled)


def seller(request: Request) -> SellerSnapshot:
    """The seller profile of the running app's settings."""
    return seller_snapshot(request_settings(request))


@router.post(
    "/periods/{period}/close",
    responses={
        **_ERRORS,
        409: error_schema("The period (plus grace) has not ended, or another close is running"),
        422: error_schema("Bad period"),
    },
)
async def close_period(
    actor: Finance,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    period: str,
    dry_run: Annotated[
        bool,
        Query(
            description="Rehearse: return the invoices a close would write now, for any "
            "month (open, ended or closed), and write nothing"
        ),
    ] = False,
) -> CloseOut:
    """Write and finalize one invoice per customer for the month, each with the seller
    profile, the customer's billing details and tax treatment as they are now, issued now and
    due after the payment terms. Closing again is a no-op for the customers already
    invoiced. A customer whose plan cannot be priced exactly is listed in `not_ratable` and
    not invoiced; the others are. With `dry_run=true` nothing is written (no invoice, no
    number, no audit entry) and `invoices` shows what a close would write at this moment."""
    grace = timedelta(hours=request_settings(request).billing_grace_hours)
    result = await service.close_period(
        session,
        actor,
        Period.parse(period),
        grace=grace,
        seller=seller(request),
        now=clock.now(),
        dry_run=dry_run,
    )
    return close_out(result, stripe_enabled=stripe_gateway(request) is not None)


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
    return InvoiceList(data=[invoice_summary(i) for i in invoices])


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
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    customer: DbId,
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
) -> InvoiceOut:
    """The period's invoice to date (default: the open period), rated, taxed and addressed
    as closing now would; not yet issued, so without number or dates."""
    p = Period.parse(period) if period else Period.containing(clock.now())
    draft = await service.preview(session, customer, p, seller=seller(request), now=clock.now())
    return draft_out(draft, preview=True)


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
