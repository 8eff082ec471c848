"""Invoices: closing periods, previews, numbering.

Closing a period is idempotent: a customer who already has an invoice for the period is
skipped, and the unique (customer, period) constraint makes a concurrent second close fail
instead of writing twice. A customer whose plan cannot be priced (``PlanNotRatable``) does
not hold up everyone else's invoices: it is listed in ``not_ratable`` and gets its invoice
from a later close, once the plan is fixed. Numbers are gapless per year: taken from a
counter row that is incremented inside the closing transaction, so a rolled-back close (or
a skipped customer) leaves no hole.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record
from app.billing.errors import (
    CloseConflict,
    InvoiceNotFound,
    NoPlan,
    PeriodNotClosable,
    PlanNotRatable,
)
from app.billing.rating import RatedInvoice, rate_customer
from app.money.periods import Period
from app.orm import Customer, Invoice, InvoiceLine

log = logging.getLogger("tollgate.billing")


@dataclass
class CloseResult:
    period: str
    created: list[int] = field(default_factory=list)
    already_closed: list[int] = field(default_factory=list)
    without_plan: list[int] = field(default_factory=list)
    # skipped, their plan cannot be priced: {customer_id, plan_version_id, reason}
    not_ratable: list[dict[str, object]] = field(default_factory=list)


async def next_invoice_number(session: AsyncSession, year: int) -> str:
    # Same statement on Postgres and SQLite: the upsert row-locks the counter until commit.
    number = await session.scalar(
        text(
            "INSERT INTO invoice_sequences (year, last_number) VALUES (:year, 1) "
            "ON CONFLICT (year) DO UPDATE SET last_number = invoice_sequences.last_number + 1 "
            "RETURNING last_number"
        ),
        {"year": year},
    )
    return f"TG-{year}-{int(number):06d}"


async def close_period(
    session: AsyncSession,
    actor: Actor,
    period: Period,
    *,
    grace: timedelta,
    now: datetime,
) -> CloseResult:
    """Write and finalize the period's invoices and record the close in the audit log, in
    the caller's transaction."""
    if now < period.end + grace:
        raise PeriodNotClosable(
            f"{period} can be closed from {(period.end + grace).isoformat()} "
            f"(period end + {grace} grace)",
            details={"closable_from": (period.end + grace).isoformat()},
        )
    result = CloseResult(str(period))
    closed = set(
        await session.scalars(select(Invoice.customer_id).where(Invoice.period == str(period)))
    )
    customers = list(await session.scalars(select(Customer.id).order_by(Customer.id)))
    for customer_id in customers:
        if customer_id in closed:
            result.already_closed.append(customer_id)
            continue
        try:
            rated = await rate_customer(session, customer_id, period)
        except PlanNotRatable as exc:  # rating only reads: nothing to undo
            log.warning("customer not invoiced: %s", exc.message, extra={"period": str(period)})
            details = exc.details if isinstance(exc.details, dict) else {}
            result.not_ratable.append(
                {
                    "customer_id": customer_id,
                    "plan_version_id": details.get("plan_version_id"),
                    "reason": exc.message,
                }
            )
            continue
        if rated is None:
            result.without_plan.append(customer_id)
            continue
        try:
            invoice = await _write_invoice(session, rated)
        except IntegrityError:
            raise CloseConflict(
                f"{period} is being closed by another request; retry to see its result"
            ) from None
        invoice.number = await next_invoice_number(session, now.year)
        invoice.status = "finalized"
        invoice.finalized_at = now
        invoice.status_changed_at = now
        result.created.append(invoice.id)
    await session.flush()
    await record(session, actor, "period.close", "period", str(period), after=asdict(result))
    return result


async def _write_invoice(session: AsyncSession, rated: RatedInvoice) -> Invoice:
    invoice = Invoice(
        customer_id=rated.customer_id,
        period=str(rated.period),
        period_start=rated.period.start,
        period_end=rated.period.end,
        status="draft",
        currency=rated.currency,
        subtotal_minor=rated.subtotal_minor,
        total_minor=rated.total_minor,
    )
    session.add(invoice)
    await session.flush()
    for position, line in enumerate(rated.lines, start=1):
        session.add(
            InvoiceLine(
                invoice_id=invoice.id,
                position=position,
                plan_version_id=line.plan_version_id,
                kind=line.kind,
                description=line.description,
                unit=line.unit,
                model=line.model,
                variant=line.variant,
                quantity=line.quantity,
                billable_quantity=line.billable_quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                amount_minor=line.amount_minor,
                period_start=line.period_start,
                period_end=line.period_end,
            )
        )
    await session.flush()
    return invoice


async def preview(session: AsyncSession, customer_id: int, period: Period) -> RatedInvoice:
    if await session.get(Customer, customer_id) is None:
        raise InvoiceNotFound(f"customer {customer_id} does not exist")
    rated = await rate_customer(session, customer_id, period)
    if rated is None:
        raise NoPlan(f"customer {customer_id} has no plan in {period}")
    return rated


async def get_invoice(session: AsyncSession, invoice_id: int) -> tuple[Invoice, list[InvoiceLine]]:
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None:
        raise InvoiceNotFound(f"invoice {invoice_id} does not exist")
    lines = list(
        await session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
    )
    return invoice, lines


async def list_invoices(
    session: AsyncSession,
    *,
    customer_id: int | None = None,
    period: Period | None = None,
    status: str | None = None,
) -> list[Invoice]:
    stmt = select(Invoice).order_by(Invoice.id)
    if customer_id is not None:
        stmt = stmt.where(Invoice.customer_id == customer_id)
    if period is not None:
        stmt = stmt.where(Invoice.period == str(period))
    if status is not None:
        stmt = stmt.where(Invoice.status == status)
    return list(await session.scalars(stmt))


async def period_lines(session: AsyncSession, period: Period) -> list[tuple[Invoice, InvoiceLine]]:
    rows = await session.execute(
        select(Invoice, InvoiceLine)
        .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
        .where(Invoice.period == str(period))
        .order_by(Invoice.id, InvoiceLine.position)
    )
    return [(i, line) for i, line in rows.all()]
