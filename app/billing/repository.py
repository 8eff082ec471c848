"""Billing's read queries that endpoints need (the writes live in service.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.schemas import RevenueReport, RevenueRow
from app.db.sums import joined, split_sum
from app.money.periods import Period
from app.orm import Customer, Invoice, InvoiceLine, Plan, PlanVersion

_BILLABLE_STATUSES = ("finalized", "paid")


async def invoice_customer(session: AsyncSession, invoice: Invoice) -> Customer:
    """The customer an invoice was issued to (the foreign key guarantees one)."""
    customer = await session.get(Customer, invoice.customer_id)
    assert customer is not None
    return customer


async def revenue(session: AsyncSession, p: Period) -> RevenueReport:
    """Invoiced revenue (finalized and paid invoices) for a period, by plan, customer and
    model, summed exactly in SQL (``split_sum``) per currency."""
    base = (
        select(*split_sum(InvoiceLine.amount_minor), Invoice.currency)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(Invoice.period == str(p), Invoice.status.in_(_BILLABLE_STATUSES))
    )

    async def grouped(*keys: Any) -> list[RevenueRow]:
        stmt = base.add_columns(*keys).group_by(Invoice.currency, *keys).order_by(*keys)
        if any(k.table is PlanVersion.__table__ or k.table is Plan.__table__ for k in keys):
            stmt = stmt.join(PlanVersion, PlanVersion.id == InvoiceLine.plan_version_id).join(
                Plan, Plan.id == PlanVersion.plan_id
            )
        if any(k.table is Customer.__table__ for k in keys):
            stmt = stmt.join(Customer, Customer.id == Invoice.customer_id)
        rows = (await session.execute(stmt)).all()
        return [
            RevenueRow(
                key=" v".join(str(x) for x in row[3:]) if row[3] is not None else "(base fee)",
                currency=row[2],
                amount_minor=joined(row[0], row[1]),
            )
            for row in rows
        ]

    total_rows = (await session.execute(base.group_by(Invoice.currency))).all()
    return RevenueReport(
        period=str(p),
        by_plan=await grouped(Plan.name, PlanVersion.version),
        by_customer=await grouped(Customer.name),
        by_model=await grouped(InvoiceLine.model),
        total=[
            RevenueRow(key="total", currency=c, amount_minor=joined(hi, lo))
            for hi, lo, c in total_rows
        ],
    )
