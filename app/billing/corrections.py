"""Corrections to finalized invoices, without rewriting them: void and credit notes.

A finalized invoice never changes its lines, totals or parties. Two corrections exist:

- **Void** (:func:`void_invoice`): only a finalized, unpaid invoice without credit notes.
  Its status becomes ``void`` (with ``voided_at`` and ``void_reason``); the lines and totals
  stay as issued. A partly credited invoice cannot be voided (409): credit what remains
  instead, so that the documents already sent stay consistent.
- **Credit note** (:func:`create_credit_note`): on a finalized or paid invoice, against
  some of its lines or against the invoice as a whole. Amounts are before tax. The rules:

  * a line is never credited beyond its ``amount_minor`` minus earlier credits on it;
  * the credited subtotal never exceeds the invoice subtotal;
  * tax = ``tax_on(credit subtotal, invoice.tax_rate)``, but the credited tax never exceeds
    the invoice's ``tax_minor``, and the credit note that exhausts the subtotal takes exactly
    the tax that remains: an invoice credited in full (in any number of notes) is credited
    exactly its total, tax included;
  * so the credited total never exceeds the invoice total. Breaking a rule is a 409
    ``over_credit`` that says what remains.

Both lock the invoice row (``SELECT ... FOR UPDATE`` on Postgres; SQLite serializes writers)
before they read what was credited, so two concurrent credit notes cannot over-credit and a
void cannot race a credit note. Credit note numbers ``CN-YYYY-NNNNNN`` are gapless per year,
taken from ``credit_note_sequences`` after every check has passed, in the same transaction.

Stripe learns of both on the next sync (``app.billing.credit_sync``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record, snapshot
from app.billing.credit_schemas import CreditNoteCreate
from app.billing.errors import InvoiceNotFound
from app.billing.parties import tax_on
from app.errors import AppError, NotFound, Unprocessable
from app.money.periods import Period
from app.orm import CreditNote, CreditNoteLine, Invoice, InvoiceLine

VOIDABLE = ("finalized",)
CREDITABLE = ("finalized", "paid")


class InvoiceNotVoidable(AppError):
    status_code = 409
    type = "invoice_not_voidable"


class InvoiceNotCreditable(AppError):
    status_code = 409
    type = "invoice_not_creditable"


class OverCredit(AppError):
    status_code = 409
    type = "over_credit"


class UnknownInvoiceLine(Unprocessable):
    type = "unknown_invoice_line"


class CreditNoteNotFound(NotFound):
    type = "credit_note_not_found"


async def _locked_invoice(session: AsyncSession, invoice_id: int) -> Invoice:
    invoice = await session.scalar(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if invoice is None:
        raise InvoiceNotFound(f"invoice {invoice_id} does not exist")
    return invoice


# ----------------------------------------------------------------------------- void

_VOID_FIELDS = ("status", "voided_at", "void_reason", "stripe_invoice_id")


async def void_invoice(
    session: AsyncSession, actor: Actor, invoice_id: int, reason: str, *, now: datetime
) -> Invoice:
    """Void a finalized, unpaid invoice without credit notes (audited ``invoice.void``).
    Nothing of what it says changes; a pushed invoice is voided in Stripe by the next sync,
    and one not yet pushed is never pushed."""
    invoice = await _locked_invoice(session, invoice_id)
    if invoice.status not in VOIDABLE:
        why = {
            "paid": "it is paid: issue a credit note instead",
            "void": "it is already void",
            "draft": "it is a draft, not an issued invoice",
        }.get(invoice.status, f"it is {invoice.status}")
        raise InvoiceNotVoidable(
            f"invoice {invoice_id} cannot be voided: {why}", details={"status": invoice.status}
        )
    notes = await session.scalar(
        select(func.count()).select_from(CreditNote).where(CreditNote.invoice_id == invoice_id)
    )
    if notes:
        raise InvoiceNotVoidable(
            f"invoice {invoice_id} has {notes} credit note(s): credit what remains instead",
            details={"status": invoice.status, "credit_notes": notes},
        )
    before = snapshot(invoice, *_VOID_FIELDS)
    invoice.status = "void"
    invoice.voided_at = now
    invoice.void_reason = reason
    invoice.status_changed_at = now
    await session.flush()
    await record(
        session,
        actor,
        "invoice.void",
        "invoice",
        invoice.id,
        before=before,
        after=snapshot(invoice, *_VOID_FIELDS),
    )
    return invoice


# ----------------------------------------------------------------------------- credit notes


async def next_credit_note_number(session: AsyncSession, year: int) -> str:
    """``CN-YYYY-NNNNNN``, gapless per year: the upsert row-locks the counter until commit
    (the same statement as invoice numbers, on Postgres and SQLite)."""
    number = await session.scalar(
        text(
            "INSERT INTO credit_note_sequences (year, last_number) VALUES (:year, 1) "
            "ON CONFLICT (year) DO UPDATE "
            "SET last_number = credit_note_sequences.last_number + 1 "
            "RETURNING last_number"
        ),
        {"year": year},
    )
    return f"CN-{year}-{int(number):06d}"


@dataclass(frozen=True)
class Credited:
    """What earlier credit notes took off an invoice."""

    subtotal_minor: int
    tax_minor: int
    by_line: dict[int, int]  # invoice line id -> credited amount_minor

    @property
    def total_minor(self) -> int:
        return self.subtotal_minor + self.tax_minor


async def credited(session: AsyncSession, invoice_id: int) -> Credited:
    notes = (
        await session.execute(
            select(
                func.coalesce(func.sum(CreditNote.subtotal_minor), 0),
                func.coalesce(func.sum(CreditNote.tax_minor), 0),
            ).where(CreditNote.invoice_id == invoice_id)
        )
    ).one()
    lines = await session.execute(
        select(CreditNoteLine.invoice_line_id, func.sum(CreditNoteLine.amount_minor))
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .where(CreditNote.invoice_id == invoice_id, CreditNoteLine.invoice_line_id.is_not(None))
        .group_by(CreditNoteLine.invoice_line_id)
    )
    return Credited(
        int(notes[0]), int(notes[1]), {int(k): int(v) for k, v in lines.all() if k is not None}
    )


def _remaining(invoice: Invoice, done: Credited) -> dict[str, int]:
    return {
        "remaining_subtotal_minor": invoice.subtotal_minor - done.subtotal_minor,
        "remaining_tax_minor": invoice.tax_minor - done.tax_minor,
        "remaining_minor": invoice.total_minor - done.total_minor,
    }


@dataclass(frozen=True)
class _Planned:
    invoice_line_id: int | None
    description: str
    quantity: Decimal | None
    amount_minor: int


def _plan_lines(
    invoice: Invoice, lines: list[InvoiceLine], body: CreditNoteCreate, done: Credited
) -> list[_Planned]:
    if body.lines is None:
        assert body.amount_minor is not None
        label = invoice.number or f"#{invoice.id}"
        return [_Planned(None, f"Credit on invoice {label}", None, body.amount_minor)]
    by_position = {line.position: line for line in lines}
    by_id = {line.id: line for line in lines}
    planned: list[_Planned] = []
    asked: dict[int, int] = defaultdict(int)
    for i, ask in enumerate(body.lines):
        if ask.invoice_line_id is not None:
            target = by_id.get(ask.invoice_line_id)
            ref = f"invoice_line_id {ask.invoice_line_id}"
        else:
            assert ask.invoice_line_position is not None
            target = by_position.get(ask.invoice_line_position)
            ref = f"invoice_line_position {ask.invoice_line_position}"
        if target is None:
            raise UnknownInvoiceLine(
                f"lines[{i}]: invoice {invoice.id} has no line with {ref}",
                details={"line": i, "invoice_line_positions": sorted(by_position)},
            )
        asked[target.id] += ask.amount_minor
        planned.append(
            _Planned(
                target.id, ask.description or target.description, ask.quantity, ask.amount_minor
            )
        )
    for line_id, amount in asked.items():
        line = by_id[line_id]
        left = line.amount_minor - done.by_line.get(line_id, 0)
        if amount > left:
            raise OverCredit(
                f"invoice line {line.position} has {left} (minor units) left to credit, "
                f"{amount} asked",
                details={
                    "invoice_line_position": line.position,
                    "invoice_line_id": line.id,
                    "requested_minor": amount,
                    "line_remaining_minor": left,
                    **_remaining(invoice, done),
                },
            )
    return planned


def credit_tax(invoice: Invoice, done: Credited, subtotal_minor: int) -> int:
    """The tax of a credit note of ``subtotal_minor`` (see the module doc): the invoice rate
    on the credit's subtotal, at most the tax not yet credited, and exactly that when the
    credit exhausts the invoice's subtotal."""
    left = invoice.tax_minor - done.tax_minor
    if done.subtotal_minor + subtotal_minor == invoice.subtotal_minor:
        return left
    rate = None if invoice.tax_exempt else invoice.tax_rate
    return max(0, min(tax_on(subtotal_minor, rate), left))


_NOTE_FIELDS = (
    "number",
    "invoice_id",
    "customer_id",
    "currency",
    "reason",
    "subtotal_minor",
    "tax_minor",
    "total_minor",
    "issued_at",
)


async def create_credit_note(
    session: AsyncSession,
    actor: Actor,
    invoice_id: int,
    body: CreditNoteCreate,
    *,
    now: datetime,
) -> CreditNote:
    """Issue a credit note on a finalized or paid invoice (audited ``credit_note.create``);
    the rules are in the module doc. Raises :class:`InvoiceNotCreditable` (void, draft),
    :class:`UnknownInvoiceLine`, :class:`OverCredit`."""
    invoice = await _locked_invoice(session, invoice_id)
    if invoice.status not in CREDITABLE:
        raise InvoiceNotCreditable(
            f"invoice {invoice_id} is {invoice.status}: only issued invoices (open or paid) "
            "can be credited",
            details={"status": invoice.status},
        )
    lines = list(
        await session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
    )
    done = await credited(session, invoice_id)
    planned = _plan_lines(invoice, lines, body, done)
    subtotal = sum(p.amount_minor for p in planned)
    if done.subtotal_minor + subtotal > invoice.subtotal_minor:
        raise OverCredit(
            f"invoice {invoice_id} has {invoice.subtotal_minor - done.subtotal_minor} "
            f"(minor units, before tax) left to credit, {subtotal} asked",
            details={"requested_subtotal_minor": subtotal, **_remaining(invoice, done)},
        )
    tax = credit_tax(invoice, done, subtotal)
    if done.total_minor + subtotal + tax > invoice.total_minor:  # implied by the above
        raise OverCredit(
            f"invoice {invoice_id} has {invoice.total_minor - done.total_minor} left to credit",
            details={"requested_minor": subtotal + tax, **_remaining(invoice, done)},
        )
    note = CreditNote(
        number=await next_credit_note_number(session, now.year),
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        reason=body.reason,
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax,
        issued_at=now,
    )
    session.add(note)
    await session.flush()
    for position, p in enumerate(planned, start=1):
        session.add(
            CreditNoteLine(
                credit_note_id=note.id,
                position=position,
                invoice_line_id=p.invoice_line_id,
                description=p.description,
                quantity=p.quantity,
                amount_minor=p.amount_minor,
            )
        )
    await session.flush()
    await record(
        session,
        actor,
        "credit_note.create",
        "credit_note",
        note.id,
        after={
            **snapshot(note, *_NOTE_FIELDS),
            "lines": [
                {"invoice_line_id": p.invoice_line_id, "amount_minor": p.amount_minor}
                for p in planned
            ],
        },
    )
    return note


# ----------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class CreditNoteView:
    note: CreditNote
    invoice: Invoice
    lines: list[tuple[CreditNoteLine, int | None]]  # (line, credited invoice line's position)


async def get_credit_note(session: AsyncSession, credit_note_id: int) -> CreditNoteView:
    note = await session.get(CreditNote, credit_note_id)
    if note is None:
        raise CreditNoteNotFound(f"credit note {credit_note_id} does not exist")
    invoice = await session.get(Invoice, note.invoice_id)
    assert invoice is not None
    rows = await session.execute(
        select(CreditNoteLine, InvoiceLine.position)
        .outerjoin(InvoiceLine, InvoiceLine.id == CreditNoteLine.invoice_line_id)
        .where(CreditNoteLine.credit_note_id == credit_note_id)
        .order_by(CreditNoteLine.position)
    )
    return CreditNoteView(note, invoice, [(line, pos) for line, pos in rows.all()])


async def list_credit_notes(
    session: AsyncSession,
    *,
    invoice_id: int | None = None,
    customer_id: int | None = None,
    period: Period | None = None,
) -> list[tuple[CreditNote, Invoice]]:
    """Credit notes, oldest first; ``period`` is the credited invoice's period."""
    stmt = (
        select(CreditNote, Invoice)
        .join(Invoice, Invoice.id == CreditNote.invoice_id)
        .order_by(CreditNote.id)
    )
    if invoice_id is not None:
        stmt = stmt.where(CreditNote.invoice_id == invoice_id)
    if customer_id is not None:
        stmt = stmt.where(CreditNote.customer_id == customer_id)
    if period is not None:
        stmt = stmt.where(Invoice.period == str(period))
    return [(n, i) for n, i in (await session.execute(stmt)).all()]
