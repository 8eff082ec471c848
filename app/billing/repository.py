"""Billing's read queries that endpoints need (the writes live in service.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.report_schemas import RevenueReport, RevenueRow
from app.db.sums import joined, split_sum
from app.money.periods import Period
from app.orm import Customer, Invoice, InvoiceLine, Plan, PlanVersion

_BILLABLE_STATUSES = ("finalized", "paid")


async def invoice_customer(session: AsyncSession, invoice: Invoice) -> Customer:
    """The customer an invoice was issued to (the foreign key guarantees one)."""
    customer = await session.get(Customer, invoice.customer_id)
    assert customer is not None
    return customer


LINE_MODEL = case(
    (InvoiceLine.model.is_not(None), InvoiceLine.model),
    (InvoiceLine.kind == "base_fee", literal("(base fee)")),
    else_=literal("(all models)"),
).label("model")
"""What ``by_model`` calls an invoice line, in the revenue and the margin report alike: its
model; a plan's base fee is "(base fee)"; usage priced without a model filter is
"(all models)"."""


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
        tables = {getattr(k, "table", None) for k in keys}
        if PlanVersion.__table__ in tables or Plan.__table__ in tables:
            stmt = stmt.join(PlanVersion, PlanVersion.id == InvoiceLine.plan_version_id).join(
                Plan, Plan.id == PlanVersion.plan_id
            )
        if Customer.__table__ in tables:
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
        by_model=await grouped(LINE_MODEL),
        total=[
            RevenueRow(key="total", currency=c, amount_minor=joined(hi, lo))
            for hi, lo, c in total_rows
        ],
    )
