"""``/v1/billing``: a customer's own plan, usage, spend and invoices, for keys with the
``billing`` scope. The invoice documents are the very ones finance gets: each route checks
that the invoice is the caller's (404 otherwise, the body of a missing id) and then answers
with the ``/finance`` route's own function, so the two can never differ."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.auth.deps import Billing, ProtectedRoute
from app.billing import corrections_endpoints as credits
from app.billing import endpoints as finance
from app.billing.credit_schemas import CreditNoteList, CreditNoteOut
from app.billing.schemas import InvoiceList, InvoiceOut
from app.clock.deps import ClockDep
from app.db.session import SessionDep
from app.errors import Unprocessable, error_schema
from app.metering.schemas import GroupBy, UsageReport
from app.metering.service import usage_report
from app.money.periods import Period
from app.portal import service
from app.portal.schemas import BillingPlan, Spend
from app.validation import DbId, Timestamp

router = APIRouter(prefix="/v1/billing", tags=["billing"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the billing scope, or its customer is suspended"),
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: error_schema("No such invoice of this customer (`invoice_not_found`)")
}
_PERIOD = Query(pattern=r"^\d{4}-\d{2}$", description="A UTC month, YYYY-MM")


@router.get("/plan", responses=_ERRORS)
async def get_plan(principal: Billing, session: SessionDep, clock: ClockDep) -> BillingPlan:
    """The plan version in force now and any scheduled change, with every price: base fee
    per month, price components (included quantities, unit prices, tiers), spend cap and
    rate limits."""
    return await service.billing_plan(session, principal.customer_id, clock.now())


@router.get(
    "/usage",
    responses={**_ERRORS, 422: error_schema("Bad time range, period or grouping")},
)
async def get_usage(
    principal: Billing,
    session: SessionDep,
    clock: ClockDep,
    period: Annotated[str | None, _PERIOD] = None,
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
    """The customer's usage (as `/v1/usage`), over a billing period (`period`) or a time
    range (`start`, `end`; not both), grouped by UTC day or by model."""
    if period is not None:
        if start is not None or end is not None:
            raise Unprocessable("give a period or a start and end, not both")
        p = Period.parse(period)
        start, end = p.start, p.end
    return await usage_report(session, principal.customer_id, start, end, group_by, now=clock.now())


@router.get(
    "/spend",
    responses={
        **_ERRORS,
        404: error_schema("No plan in force (`no_plan`)"),
        409: error_schema("The plan's charges cannot be computed exactly (`plan_not_ratable`)"),
    },
)
async def get_spend(principal: Billing, session: SessionDep, clock: ClockDep) -> Spend:
    """This period's usage charges so far against the plan's spend cap, computed as the cap
    is enforced (base fee excluded; from the current plan version's start if it began this
    period)."""
    return await service.spend(session, principal.customer_id, clock.now())


@router.get("/invoices", responses={**_ERRORS, 422: error_schema("Bad period or status")})
async def list_invoices(
    principal: Billing,
    session: SessionDep,
    period: Annotated[str | None, _PERIOD] = None,
    status: Annotated[str | None, Query(pattern="^(finalized|paid|void|uncollectible)$")] = None,
) -> InvoiceList:
    """The customer's issued invoices, filtered by period (YYYY-MM) or status."""
    listed = await finance.list_invoices(
        principal, session, customer=principal.customer_id, period=period, status=status
    )
    return InvoiceList(data=[i for i in listed.data if i.status in service.VISIBLE_STATUSES])


@router.get(
    "/invoices/{invoice_id}.csv",
    responses={**_ERRORS, **_NOT_FOUND, 200: {"content": {"text/csv": {}}}},
    response_class=Response,
)
async def invoice_csv(principal: Billing, session: SessionDep, invoice_id: DbId) -> Response:
    """One of the customer's invoices as CSV, as finance exports it."""
    await service.own_invoice(session, principal.customer_id, invoice_id)
    return await finance.invoice_csv(principal, session, invoice_id)


@router.get(
    "/invoices/{invoice_id}.pdf",
    responses={**_ERRORS, **_NOT_FOUND, 200: {"content": {"application/pdf": {}}}},
    response_class=Response,
)
async def invoice_pdf(principal: Billing, session: SessionDep, invoice_id: DbId) -> Response:
    """One of the customer's invoices as the PDF document it was sent."""
    await service.own_invoice(session, principal.customer_id, invoice_id)
    return await finance.invoice_pdf(principal, session, invoice_id)


# Declared after the .csv and .pdf routes, which a bare {invoice_id} would also match.
@router.get("/invoices/{invoice_id}", responses={**_ERRORS, **_NOT_FOUND})
async def get_invoice(
    principal: Billing, request: Request, session: SessionDep, invoice_id: DbId
) -> InvoiceOut:
    """One of the customer's invoices with its lines and totals (as finance sees it)."""
    await service.own_invoice(session, principal.customer_id, invoice_id)
    return await finance.get_invoice(principal, request, session, invoice_id)


_NO_NOTE: dict[int | str, dict[str, Any]] = {
    404: error_schema("No such credit note of this customer (`credit_note_not_found`)")
}


@router.get("/credit-notes", responses={**_ERRORS, 422: error_schema("Bad filter")})
async def list_credit_notes(
    principal: Billing,
    session: SessionDep,
    invoice: DbId | None = None,
    period: Annotated[str | None, _PERIOD] = None,
) -> CreditNoteList:
    """The customer's credit notes, oldest first, filtered by invoice or the credited
    invoice's period (YYYY-MM)."""
    return await credits.list_credit_notes(
        principal, session, invoice=invoice, customer=principal.customer_id, period=period
    )


@router.get(
    "/credit-notes/{credit_note_id}.pdf",
    responses={**_ERRORS, **_NO_NOTE, 200: {"content": {"application/pdf": {}}}},
    response_class=Response,
)
async def credit_note_pdf(
    principal: Billing, session: SessionDep, credit_note_id: DbId
) -> Response:
    """One of the customer's credit notes as the PDF document it was sent."""
    await service.own_credit_note(session, principal.customer_id, credit_note_id)
    return await credits.credit_note_pdf_route(principal, session, credit_note_id)


@router.get(
    "/credit-notes/{credit_note_id}.csv",
    responses={**_ERRORS, **_NO_NOTE, 200: {"content": {"text/csv": {}}}},
    response_class=Response,
)
async def credit_note_csv(
    principal: Billing, session: SessionDep, credit_note_id: DbId
) -> Response:
    """One of the customer's credit notes as CSV, as finance exports it."""
    await service.own_credit_note(session, principal.customer_id, credit_note_id)
    return await credits.credit_note_csv_route(principal, session, credit_note_id)


# Declared after the .pdf and .csv routes, which a bare {credit_note_id} would also match.
@router.get("/credit-notes/{credit_note_id}", responses={**_ERRORS, **_NO_NOTE})
async def get_credit_note(
    principal: Billing, session: SessionDep, credit_note_id: DbId
) -> CreditNoteOut:
    """One of the customer's credit notes with its lines and totals."""
    await service.own_credit_note(session, principal.customer_id, credit_note_id)
    return await credits.get_credit_note(principal, session, credit_note_id)
