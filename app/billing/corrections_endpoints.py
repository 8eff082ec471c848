"""HTTP for invoice corrections: void, credit notes (JSON, PDF, CSV), an invoice's credits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.auth.deps import Finance, ProtectedRoute
from app.billing import corrections
from app.billing.credit_export import credit_note_csv
from app.billing.credit_schemas import (
    CreditNoteCreate,
    CreditNoteLineOut,
    CreditNoteList,
    CreditNoteOut,
    CreditNoteSummary,
    InvoiceCredits,
    VoidIn,
    VoidOut,
)
from app.billing.pdf import credit_note_pdf
from app.billing.repository import invoice_customer
from app.billing.service import get_invoice
from app.clock.deps import ClockDep
from app.db.session import SessionDep
from app.errors import error_schema
from app.money.display import minor_string
from app.money.periods import Period
from app.orm import CreditNote, Invoice
from app.validation import DbId

router = APIRouter(prefix="/finance", tags=["finance"], route_class=ProtectedRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_schema("Missing or invalid API key"),
    403: error_schema("The key lacks the finance scope"),
}
_NO_INVOICE: dict[int | str, dict[str, Any]] = {404: error_schema("No such invoice")}
_NO_NOTE: dict[int | str, dict[str, Any]] = {404: error_schema("No such credit note")}


def _summary(note: CreditNote, invoice: Invoice) -> CreditNoteSummary:
    c = note.currency
    return CreditNoteSummary(
        id=note.id,
        number=note.number,
        invoice_id=note.invoice_id,
        invoice_number=invoice.number,
        customer_id=note.customer_id,
        period=invoice.period,
        currency=c,
        reason=note.reason,
        issued_at=note.issued_at,
        subtotal_minor=note.subtotal_minor,
        subtotal=minor_string(note.subtotal_minor, c),
        tax_minor=note.tax_minor,
        tax=minor_string(note.tax_minor, c),
        total_minor=note.total_minor,
        total=minor_string(note.total_minor, c),
        stripe_credit_note_id=note.stripe_credit_note_id,
    )


def _note_out(view: corrections.CreditNoteView) -> CreditNoteOut:
    return CreditNoteOut(
        **_summary(view.note, view.invoice).model_dump(),
        lines=[
            CreditNoteLineOut(
                position=line.position,
                invoice_line_id=line.invoice_line_id,
                invoice_line_position=position,
                description=line.description,
                quantity=line.quantity,
                amount_minor=line.amount_minor,
                amount=minor_string(line.amount_minor, view.note.currency),
            )
            for line, position in view.lines
        ],
    )


@router.post(
    "/invoices/{invoice_id}/void",
    responses={
        **_ERRORS,
        **_NO_INVOICE,
        409: error_schema("The invoice is paid, void, a draft, or has credit notes"),
        422: error_schema("Bad body (a reason is required)"),
    },
)
async def void_invoice(
    actor: Finance, session: SessionDep, clock: ClockDep, invoice_id: DbId, body: VoidIn
) -> VoidOut:
    """Void an issued, unpaid invoice that has no credit notes. Its lines and totals stay as
    issued; its status becomes `void`. An invoice already in Stripe is voided there by the
    next sync (`POST /finance/sync`); one not yet pushed is never pushed. A paid or partly
    credited invoice is corrected with a credit note instead (409)."""
    invoice = await corrections.void_invoice(
        session, actor, invoice_id, body.reason, now=clock.now()
    )
    assert invoice.voided_at is not None and invoice.void_reason is not None
    return VoidOut(
        id=invoice.id,
        number=invoice.number,
        status=invoice.status,
        voided_at=invoice.voided_at,
        void_reason=invoice.void_reason,
        stripe_invoice_id=invoice.stripe_invoice_id,
    )


@router.post(
    "/invoices/{invoice_id}/credit-notes",
    status_code=201,
    responses={
        **_ERRORS,
        **_NO_INVOICE,
        409: error_schema(
            "The invoice is void or a draft (invoice_not_creditable), or the credit exceeds "
            "what remains creditable (over_credit; details say what remains)"
        ),
        422: error_schema("Bad body, or a line the invoice does not have"),
    },
)
async def create_credit_note(
    actor: Finance,
    session: SessionDep,
    clock: ClockDep,
    invoice_id: DbId,
    body: CreditNoteCreate,
) -> CreditNoteOut:
    """Issue a credit note (`CN-YYYY-NNNNNN`) on a finalized or paid invoice, against some of
    its lines or the invoice as a whole. Amounts are before tax; the tax is the invoice's
    rate on the credit's subtotal, never more than the invoice's tax not yet credited, and
    the credit note that exhausts the invoice takes exactly the tax that remains. The total
    credited never exceeds the invoice total. Stripe gets it on the next sync."""
    note = await corrections.create_credit_note(session, actor, invoice_id, body, now=clock.now())
    return _note_out(await corrections.get_credit_note(session, note.id))


@router.get("/invoices/{invoice_id}/credit-notes", responses={**_ERRORS, **_NO_INVOICE})
async def invoice_credits(_: Finance, session: SessionDep, invoice_id: DbId) -> InvoiceCredits:
    """An invoice's credit notes, what they credited and what remains creditable."""
    invoice, _lines = await get_invoice(session, invoice_id)
    notes = await corrections.list_credit_notes(session, invoice_id=invoice_id)
    done = await corrections.credited(session, invoice_id)
    c = invoice.currency
    remaining = (
        0
        if invoice.status not in corrections.CREDITABLE
        else (invoice.total_minor - done.total_minor)
    )
    return InvoiceCredits(
        invoice_id=invoice.id,
        currency=c,
        total_minor=invoice.total_minor,
        total=minor_string(invoice.total_minor, c),
        credited_minor=done.total_minor,
        credited=minor_string(done.total_minor, c),
        remaining_minor=remaining,
        remaining=minor_string(remaining, c),
        credit_notes=[_summary(n, i) for n, i in notes],
    )


@router.get("/credit-notes", responses={**_ERRORS, 422: error_schema("Bad filter")})
async def list_credit_notes(
    _: Finance,
    session: SessionDep,
    invoice: DbId | None = None,
    customer: DbId | None = None,
    period: Annotated[
        str | None, Query(pattern=r"^\d{4}-\d{2}$", description="The credited invoice's period")
    ] = None,
) -> CreditNoteList:
    """Credit notes, oldest first, filtered by invoice, customer or the invoice's period."""
    notes = await corrections.list_credit_notes(
        session,
        invoice_id=invoice,
        customer_id=customer,
        period=Period.parse(period) if period else None,
    )
    return CreditNoteList(data=[_summary(n, i) for n, i in notes])


@router.get(
    "/credit-notes/{credit_note_id}.pdf",
    responses={**_ERRORS, **_NO_NOTE, 200: {"content": {"application/pdf": {}}}},
    response_class=Response,
)
async def credit_note_pdf_route(_: Finance, session: SessionDep, credit_note_id: DbId) -> Response:
    """One credit note as a PDF document, as sent to the customer."""
    view = await corrections.get_credit_note(session, credit_note_id)
    customer = await invoice_customer(session, view.invoice)
    return Response(
        credit_note_pdf(view.note, view.lines, view.invoice, customer),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{view.note.number}.pdf"'},
    )


@router.get(
    "/credit-notes/{credit_note_id}.csv",
    responses={**_ERRORS, **_NO_NOTE, 200: {"content": {"text/csv": {}}}},
    response_class=Response,
)
async def credit_note_csv_route(_: Finance, session: SessionDep, credit_note_id: DbId) -> Response:
    """One credit note's lines as CSV (amounts in minor units and as decimals)."""
    view = await corrections.get_credit_note(session, credit_note_id)
    return Response(
        credit_note_csv(view.note, view.invoice, view.lines),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{view.note.number}.csv"'},
    )


# Declared after the .pdf and .csv routes, which a bare {credit_note_id} would also match.
@router.get("/credit-notes/{credit_note_id}", responses={**_ERRORS, **_NO_NOTE})
async def get_credit_note(_: Finance, session: SessionDep, credit_note_id: DbId) -> CreditNoteOut:
    """One credit note with its lines and totals."""
    return _note_out(await corrections.get_credit_note(session, credit_note_id))
