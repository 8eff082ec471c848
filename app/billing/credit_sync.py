"""Corrections reach Stripe with the sync (``sync_invoices`` calls :func:`push_corrections`
after pushing invoices): voids of invoices already in Stripe, and credit notes of invoices
in Stripe.

As for invoices, each push runs in its own transaction with its own audit row
(``invoice.void_push``, ``credit_note.push``) and every Stripe call carries an idempotency
key derived from the local id, and the gateway looks for an existing object by metadata
before creating one: a push interrupted at any point (even after Stripe succeeded) is
completed by the next sync without a duplicate. A void invoice that never reached Stripe is
never pushed (``sync_invoices`` pushes finalized invoices only).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import Actor, record, snapshot
from app.billing.stripe_gateway import (
    PushCreditLine,
    PushCreditNote,
    StripeError,
    StripeGateway,
)
from app.money.display import plain
from app.money.periods import Period
from app.orm import CreditNote, CreditNoteLine, Invoice

log = logging.getLogger("tollgate.billing.sync")


@dataclass
class CorrectionsPushed:
    voided: list[int] = field(default_factory=list)  # invoice ids voided in Stripe
    void_failed: dict[int, str] = field(default_factory=dict)
    credit_notes: list[int] = field(default_factory=list)  # credit note ids created in Stripe
    credit_notes_failed: dict[int, str] = field(default_factory=dict)


async def push_corrections(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    actor: Actor,
    period: Period | None = None,
) -> CorrectionsPushed:
    result = CorrectionsPushed()
    async with sessionmaker() as session:
        voids = select(Invoice.id).where(
            Invoice.status == "void",
            Invoice.stripe_invoice_id.is_not(None),
            or_(Invoice.stripe_status.is_(None), Invoice.stripe_status != "void"),
        )
        notes = (
            select(CreditNote.id)
            .join(Invoice, Invoice.id == CreditNote.invoice_id)
            .where(
                CreditNote.stripe_credit_note_id.is_(None), Invoice.stripe_invoice_id.is_not(None)
            )
        )
        if period is not None:
            voids = voids.where(Invoice.period == str(period))
            notes = notes.where(Invoice.period == str(period))
        void_ids = list(await session.scalars(voids.order_by(Invoice.id)))
        note_ids = list(await session.scalars(notes.order_by(CreditNote.id)))
    for invoice_id in void_ids:
        try:
            await _void_one(sessionmaker, gateway, actor, invoice_id)
            result.voided.append(invoice_id)
        except StripeError as exc:
            log.warning("stripe void failed", extra={"invoice_id": invoice_id, "error": str(exc)})
            result.void_failed[invoice_id] = str(exc)
    for note_id in note_ids:
        try:
            await _push_note(sessionmaker, gateway, actor, note_id)
            result.credit_notes.append(note_id)
        except StripeError as exc:
            log.warning(
                "stripe credit note push failed",
                extra={"credit_note_id": note_id, "error": str(exc)},
            )
            result.credit_notes_failed[note_id] = str(exc)
    return result


_VOID_FIELDS = ("status", "stripe_invoice_id", "stripe_status")


async def _void_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    actor: Actor,
    invoice_id: int,
) -> None:
    async with sessionmaker() as session, session.begin():
        invoice = await session.get(Invoice, invoice_id)
        assert invoice is not None and invoice.stripe_invoice_id is not None
        pushed = await asyncio.to_thread(
            gateway.void_invoice, invoice.stripe_invoice_id, str(invoice.id)
        )
        before = snapshot(invoice, *_VOID_FIELDS)
        invoice.stripe_status = pushed.status
        await session.flush()
        await record(
            session,
            actor,
            "invoice.void_push",
            "invoice",
            invoice.id,
            before=before,
            after=snapshot(invoice, *_VOID_FIELDS),
        )


def _tax_label(invoice: Invoice) -> str:
    return f"Tax ({plain(invoice.tax_rate)}%)" if invoice.tax_rate is not None else "Tax"


async def _push_note(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    actor: Actor,
    note_id: int,
) -> None:
    async with sessionmaker() as session, session.begin():
        note = await session.get(CreditNote, note_id)
        assert note is not None
        invoice = await session.get(Invoice, note.invoice_id)
        assert invoice is not None and invoice.stripe_invoice_id is not None
        lines = list(
            await session.scalars(
                select(CreditNoteLine)
                .where(CreditNoteLine.credit_note_id == note_id)
                .order_by(CreditNoteLine.position)
            )
        )
        push = PushCreditNote(
            local_id=str(note.id),
            number=note.number,
            stripe_invoice_id=invoice.stripe_invoice_id,
            memo=f"{note.number}: {note.reason}",
            lines=tuple(
                PushCreditLine(
                    invoice_line_local_id=(
                        None if line.invoice_line_id is None else str(line.invoice_line_id)
                    ),
                    description=line.description,
                    amount_minor=line.amount_minor,
                )
                for line in lines
            ),
            tax_minor=note.tax_minor,
            tax_label=_tax_label(invoice),
        )
        stripe_id = await asyncio.to_thread(gateway.push_credit_note, push)
        note.stripe_credit_note_id = stripe_id
        await session.flush()
        await record(
            session,
            actor,
            "credit_note.push",
            "credit_note",
            note.id,
            before={"stripe_credit_note_id": None},
            after={"stripe_credit_note_id": stripe_id, "number": note.number},
        )
