"""Stripe collection: push finalized invoices, apply webhooks, reconcile totals.

Tollgate rates usage itself; Stripe only collects. Pushing runs outside any request, one
invoice per transaction, and every Stripe call carries an idempotency key derived from local
ids (see ``stripe_gateway``), so an interrupted sync completes on the next run without
duplicates. The Stripe SDK is synchronous: its calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.service import Actor, record, snapshot
from app.billing.credit_sync import push_corrections
from app.billing.errors import MalformedEvent
from app.billing.stripe_gateway import (
    PushedInvoice,
    PushInvoice,
    PushLine,
    StripeError,
    StripeGateway,
)
from app.errors import BadRequest
from app.money.display import plain
from app.money.periods import Period
from app.orm import Customer, Invoice, InvoiceLine, StripeEvent

log = logging.getLogger("tollgate.billing.sync")


class UnknownInvoice(BadRequest):
    type = "unknown_invoice"


@dataclass
class SyncResult:
    pushed: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # invoice id -> push or void failure
    voided: list[int] = field(default_factory=list)
    credit_notes_pushed: list[int] = field(default_factory=list)
    credit_notes_failed: dict[int, str] = field(default_factory=dict)


async def sync_invoices(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    actor: Actor,
    period: Period | None = None,
) -> SyncResult:
    """Push every finalized invoice not yet in Stripe (optionally of one period), then the
    corrections (``credit_sync``: voids, credit notes). Each push
    commits with its own audit row (``invoice.push``); the run as a whole is recorded last
    (``stripe.sync``: what was pushed and what failed)."""
    result = SyncResult()
    async with sessionmaker() as session:
        stmt = select(Invoice.id).where(
            Invoice.status == "finalized", Invoice.stripe_invoice_id.is_(None)
        )
        if period is not None:
            stmt = stmt.where(Invoice.period == str(period))
        ids = list(await session.scalars(stmt.order_by(Invoice.id)))
    for invoice_id in ids:
        try:
            await _push_one(sessionmaker, gateway, actor, invoice_id)
            result.pushed.append(invoice_id)
        except StripeError as exc:
            # Left for the next run: every call it made is idempotent.
            log.warning("stripe push failed", extra={"invoice_id": invoice_id, "error": str(exc)})
            result.failed[invoice_id] = str(exc)
    corrections = await push_corrections(sessionmaker, gateway, actor, period)
    result.voided = corrections.voided
    result.failed.update(corrections.void_failed)
    result.credit_notes_pushed = corrections.credit_notes
    result.credit_notes_failed = corrections.credit_notes_failed
    async with sessionmaker() as session, session.begin():
        await record(
            session,
            actor,
            "stripe.sync",
            "period",
            None if period is None else str(period),
            after={
                "pushed": result.pushed,
                "failed": {str(k): v for k, v in result.failed.items()},
                "voided": result.voided,
                "credit_notes_pushed": result.credit_notes_pushed,
                "credit_notes_failed": {str(k): v for k, v in result.credit_notes_failed.items()},
            },
        )
    return result


_PUSHED_FIELDS = ("number", "status", "stripe_invoice_id", "stripe_status")


def _tax_line(invoice: Invoice) -> tuple[PushLine, ...]:
    """The invoice's tax as one more Stripe invoice item, so that Stripe collects (and the
    reconciliation compares) the same total; its own idempotency key (``tax-{id}``)."""
    if invoice.tax_minor == 0:
        return ()
    rate = "" if invoice.tax_rate is None else f" {plain(invoice.tax_rate)}%"
    return (
        PushLine(
            local_id=f"tax-{invoice.id}",
            description=f"Tax{rate}",
            amount_minor=invoice.tax_minor,
            period_start=int(invoice.period_start.timestamp()),
            period_end=int(invoice.period_end.timestamp()),
        ),
    )


async def _push_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: StripeGateway,
    actor: Actor,
    invoice_id: int,
) -> None:
    async with sessionmaker() as session, session.begin():
        invoice = await session.get(Invoice, invoice_id)
        assert invoice is not None and invoice.number is not None
        customer = await session.get(Customer, invoice.customer_id)
        assert customer is not None
        lines = list(
            await session.scalars(
                select(InvoiceLine)
                .where(InvoiceLine.invoice_id == invoice_id)
                .order_by(InvoiceLine.position)
            )
        )
        if customer.stripe_customer_id is None:
            customer.stripe_customer_id = await asyncio.to_thread(
                gateway.ensure_customer, str(customer.id), customer.name, customer.email
            )
        push = PushInvoice(
            local_id=str(invoice.id),
            number=invoice.number,
            customer_stripe_id=customer.stripe_customer_id,
            currency=invoice.currency,
            description=f"Tollgate usage {invoice.period} ({invoice.number})",
            lines=tuple(
                PushLine(
                    local_id=str(line.id),
                    description=line.description,
                    amount_minor=line.amount_minor,
                    period_start=int(line.period_start.timestamp()),
                    period_end=int(line.period_end.timestamp()),
                )
                for line in lines
                if line.amount_minor != 0
            )
            + _tax_line(invoice),
        )
        pushed: PushedInvoice = await asyncio.to_thread(gateway.push_invoice, push)
        before = snapshot(invoice, *_PUSHED_FIELDS)
        invoice.stripe_invoice_id = pushed.stripe_invoice_id
        invoice.stripe_status = pushed.status
        await session.flush()
        await record(
            session,
            actor,
            "invoice.push",
            "invoice",
            invoice.id,
            before=before,
            after={
                **snapshot(invoice, *_PUSHED_FIELDS),
                "stripe_customer_id": customer.stripe_customer_id,
            },
        )


# Webhook event type -> local invoice status (None: record Stripe's status only).
_EVENT_STATUS: dict[str, str | None] = {
    "invoice.paid": "paid",
    "invoice.payment_failed": None,
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}

# What Tollgate reads from an event and keeps in its columns (sizes as in the schema).
# Stripe's ids and types are short ASCII; anything else cannot be Stripe's and would
# otherwise reach Postgres as text it refuses (NUL, too long).
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,251}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_OBJECT_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
_STATUS = re.compile(r"[A-Za-z0-9_]{1,32}")


def _text(value: Any, shape: re.Pattern[str], problem: str) -> str:
    if not isinstance(value, str) or shape.fullmatch(value) is None:
        raise MalformedEvent(problem)
    return value


_WEBHOOK_FIELDS = ("status", "stripe_status")
WEBHOOK_ACTOR = "stripe"
"""Who a webhook's change is recorded as: Stripe, verified by the event's signature."""


async def apply_webhook(session: AsyncSession, event: dict[str, Any], *, now: datetime) -> str:
    """Apply a verified event once. Returns ``applied``, ``ignored`` or ``duplicate``.

    An applied event's change to the invoice is recorded in the audit log (actor
    ``stripe``) in the same transaction as the change and the dedupe row.

    Raises :class:`MalformedEvent` when the fields Tollgate reads or stores do not have
    Stripe's shape (nothing is recorded then), :class:`UnknownInvoice` for an invoice event
    about an invoice this server never pushed."""
    event_id = _text(event.get("id"), _EVENT_ID, "the event has no valid id")
    event_type = _text(event.get("type"), _EVENT_TYPE, "the event has no valid type")
    if await session.get(StripeEvent, event_id) is not None:
        return "duplicate"
    outcome = "ignored"
    invoice: Invoice | None = None
    before: dict[str, Any] = {}
    if event_type in _EVENT_STATUS:
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not isinstance(obj, dict):
            raise MalformedEvent(f"{event_type} event has no data.object invoice")
        stripe_id = _text(obj.get("id"), _OBJECT_ID, "data.object has no valid id")
        if event_type == "invoice.payment_failed":
            stripe_status: str | None = "payment_failed"
        elif obj.get("status") is None:
            stripe_status = None
        else:
            stripe_status = _text(obj["status"], _STATUS, "data.object has no valid status")
        invoice = await session.scalar(
            select(Invoice).where(Invoice.stripe_invoice_id == stripe_id)
        )
        if invoice is None:
            raise UnknownInvoice(f"no local invoice for Stripe invoice {stripe_id!r}")
        before = snapshot(invoice, *_WEBHOOK_FIELDS)
        new_status = _EVENT_STATUS[event_type]
        if new_status is not None and invoice.status != new_status:
            invoice.status = new_status
            invoice.status_changed_at = now
        invoice.stripe_status = stripe_status
        outcome = "applied"
    session.add(StripeEvent(id=event_id, type=event_type, payload=event, outcome=outcome))
    try:
        await session.flush()
    except IntegrityError:  # the same event delivered concurrently: the other one wins
        await session.rollback()
        return "duplicate"
    if invoice is not None:
        await record(
            session,
            WEBHOOK_ACTOR,
            "invoice.webhook",
            "invoice",
            invoice.id,
            before=before,
            after={**snapshot(invoice, *_WEBHOOK_FIELDS), "event": event_id, "type": event_type},
        )
    return outcome


@dataclass(frozen=True, slots=True)
class ReconcileRow:
    invoice_id: int
    number: str | None
    customer_id: int
    local_total_minor: int
    stripe_invoice_id: str | None
    stripe_total_minor: int | None
    result: str  # match | mismatch | not_pushed | missing_in_stripe
    currency: str


async def reconcile(
    session: AsyncSession, gateway: StripeGateway, period: Period
) -> list[ReconcileRow]:
    invoices = list(
        await session.scalars(
            select(Invoice)
            .where(Invoice.period == str(period), Invoice.status != "draft")
            .order_by(Invoice.id)
        )
    )
    rows = []
    for invoice in invoices:
        stripe_total: int | None = None
        if invoice.stripe_invoice_id is None:
            result = "not_pushed"
        else:
            try:
                remote = await asyncio.to_thread(
                    gateway.retrieve_invoice, invoice.stripe_invoice_id
                )
            except StripeError:
                result = "missing_in_stripe"
            else:
                stripe_total = remote.total_minor
                result = "match" if stripe_total == invoice.total_minor else "mismatch"
        rows.append(
            ReconcileRow(
                invoice.id,
                invoice.number,
                invoice.customer_id,
                invoice.total_minor,
                invoice.stripe_invoice_id,
                stripe_total,
                result,
                invoice.currency,
            )
        )
    return rows
