"""Invoices: closing periods, previews, numbering.

Closing a period is idempotent: a customer who already has an invoice for the period is
skipped, and the unique (customer, period) constraint makes a concurrent second close fail
instead of writing twice. A customer whose plan cannot be priced (``PlanNotRatable``) does
not hold up everyone else's invoices: it is listed in ``not_ratable`` and gets its invoice
from a later close, once the plan is fixed. Numbers are gapless per year: taken from a
counter row that is incremented inside the closing transaction, so a rolled-back close (or
a skipped customer) leaves no hole.

A dry run (``close_period(..., dry_run=True)``) goes through the same drafting as the close
(``_draft_period``) and stops before the first write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.service import Actor, record
from app.billing.drafts import DraftInvoice, draft_invoice
from app.billing.errors import (
    CloseConflict,
    InvoiceNotFound,
    NoPlan,
    PeriodNotClosable,
    PlanNotRatable,
)
from app.billing.parties import SellerSnapshot
from app.billing.rating import aggregate_usage_by_customer, rate_customer
from app.money.periods import Period
from app.orm import Customer, Invoice, InvoiceLine

log = logging.getLogger("tollgate.billing")


@dataclass
class CloseResult:
    period: str
    # Customers are invoiced from this moment on (period end + grace).
    closable_from: datetime
    dry_run: bool = False
    # What the close writes (or, in a dry run, would write now), one per customer invoiced.
    drafts: list[DraftInvoice] = field(default_factory=list)
    # The invoices written, with their lines, in the order of ``drafts`` (none in a dry run).
    written: list[tuple[Invoice, list[InvoiceLine]]] = field(default_factory=list)
    created: list[int] = field(default_factory=list)  # ids of the invoices written
    already_closed: list[int] = field(default_factory=list)
    without_plan: list[int] = field(default_factory=list)
    # skipped, their plan cannot be priced: {customer_id, plan_version_id, reason}
    not_ratable: list[dict[str, object]] = field(default_factory=list)

    @property
    def invoiced(self) -> list[int]:
        """The customers invoiced (in a dry run: who would be)."""
        return [draft.customer_id for draft in self.drafts]

    def audited(self) -> dict[str, object]:
        return {
            "period": self.period,
            "created": self.created,
            "already_closed": self.already_closed,
            "without_plan": self.without_plan,
            "not_ratable": self.not_ratable,
        }


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
    seller: SellerSnapshot,
    now: datetime,
    dry_run: bool = False,
) -> CloseResult:
    """Write and finalize the period's invoices and record the close in the audit log, in
    the caller's transaction. Each invoice keeps ``seller`` (the profile as configured now)
    and its customer's billing details and tax treatment as they are now.

    ``dry_run``: any month, open, ended or closed; the invoices a close would write at
    ``now`` are computed by the same code and returned, and nothing is written (no invoice,
    no number taken, no audit entry)."""
    closable_from = period.end + grace
    if not dry_run and now < closable_from:
        raise PeriodNotClosable(
            f"{period} can be closed from {closable_from.isoformat()} (period end + {grace} grace)",
            details={"closable_from": closable_from.isoformat()},
        )
    result = CloseResult(str(period), closable_from, dry_run=dry_run)
    await _draft_period(session, period, result, seller=seller, now=now)
    if dry_run:
        return result
    for draft in result.drafts:
        try:
            invoice, lines = await _write_invoice(session, draft)
        except IntegrityError:
            raise CloseConflict(
                f"{period} is being closed by another request; retry to see its result"
            ) from None
        invoice.number = await next_invoice_number(session, now.year)
        invoice.status = "finalized"
        invoice.finalized_at = now
        invoice.status_changed_at = now
        result.created.append(invoice.id)
        result.written.append((invoice, lines))
    await session.flush()
    await record(session, actor, "period.close", "period", str(period), after=result.audited())
    return result


async def _draft_period(
    session: AsyncSession,
    period: Period,
    result: CloseResult,
    *,
    seller: SellerSnapshot,
    now: datetime,
) -> None:
    """Sort every customer into ``result``: already invoiced, without a plan, not ratable,
    or drafted. Only reads. The operator account is the seller, never invoiced: it is in
    none of the lists."""
    closed = set(
        await session.scalars(select(Invoice.customer_id).where(Invoice.period == str(period)))
    )
    customers = select(Customer).where(Customer.is_operator.is_(False)).order_by(Customer.id)
    usage = await aggregate_usage_by_customer(session, period.start, period.end)  # one read
    for customer in await session.scalars(customers):
        if customer.id in closed:
            result.already_closed.append(customer.id)
            continue
        try:
            rated = await rate_customer(session, customer.id, period, period_usage=usage)
        except PlanNotRatable as exc:  # rating only reads: nothing to undo
            log.warning("customer not invoiced: %s", exc.message, extra={"period": str(period)})
            details = exc.details if isinstance(exc.details, dict) else {}
            result.not_ratable.append(
                {
                    "customer_id": customer.id,
                    "plan_version_id": details.get("plan_version_id"),
                    "reason": exc.message,
                }
            )
            continue
        if rated is None:
            result.without_plan.append(customer.id)
            continue
        result.drafts.append(draft_invoice(rated, customer, seller, now=now))


async def _write_invoice(
    session: AsyncSession, draft: DraftInvoice
) -> tuple[Invoice, list[InvoiceLine]]:
    rated = draft.rated
    invoice = Invoice(
        customer_id=rated.customer_id,
        period=str(rated.period),
        period_start=rated.period.start,
        period_end=rated.period.end,
        status="draft",
        currency=rated.currency,
        subtotal_minor=draft.subtotal_minor,
        tax_minor=draft.tax_minor,
        total_minor=draft.total_minor,
        tax_rate=draft.tax_rate,
        tax_exempt=draft.tax_exempt,
        tax_note=draft.tax_note,
        issued_at=draft.issued_at,
        due_at=draft.due_at,
        seller=dict(draft.seller),
        bill_to=dict(draft.bill_to),
    )
    session.add(invoice)
    await session.flush()
    lines = [
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
        for position, line in enumerate(rated.lines, start=1)
    ]
    session.add_all(lines)
    await session.flush()
    return invoice, lines


async def preview(
    session: AsyncSession,
    customer_id: int,
    period: Period,
    *,
    seller: SellerSnapshot,
    now: datetime,
) -> DraftInvoice:
    """The customer's invoice for the period to date, as a close at ``now`` would write it
    (tax and parties included)."""
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise InvoiceNotFound(f"customer {customer_id} does not exist")
    rated = await rate_customer(session, customer_id, period)
    if rated is None:
        raise NoPlan(f"customer {customer_id} has no plan in {period}")
    return draft_invoice(rated, customer, seller, now=now)


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
