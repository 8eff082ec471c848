"""Billing's read queries that endpoints need (the writes live in service.py)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.report_schemas import RevenueReport, RevenueRow
from app.db.sums import joined, split_sum
from app.money.periods import Period
from app.orm import CreditNote, CreditNoteLine, Customer, Invoice, InvoiceLine, Plan, PlanVersion

_BILLABLE_STATUSES = ("finalized", "paid")


async def invoice_customer(session: AsyncSession, invoice: Invoice) -> Customer:
    """The customer an invoice was issued to (the foreign key guarantees one)."""
    customer = await session.get(Customer, invoice.customer_id)
    assert customer is not None
    return customer


@dataclass(frozen=True, slots=True)
class InvoicePage:
    """One page of invoices, newest first, each with its customer's name, and how many
    invoices match the filters in all."""

    rows: list[tuple[Invoice, str]]
    total: int


async def invoice_page(
    session: AsyncSession,
    *,
    customer_id: int | None = None,
    period: Period | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> InvoicePage:
    """The invoices list of the console: filtered by customer, period or status (each an
    indexed column), newest first, one page at a time with the total; the customer's name
    comes in the same query (no query per row)."""
    filters = []
    if customer_id is not None:
        filters.append(Invoice.customer_id == customer_id)
    if period is not None:
        filters.append(Invoice.period == str(period))
    if status is not None:
        filters.append(Invoice.status == status)
    total = await session.scalar(select(func.count()).select_from(Invoice).where(*filters))
    rows = await session.execute(
        select(Invoice, Customer.name)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(*filters)
        .order_by(Invoice.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return InvoicePage([(invoice, name) for invoice, name in rows.all()], int(total or 0))


LINE_MODEL = case(
    (InvoiceLine.model.is_not(None), InvoiceLine.model),
    (InvoiceLine.kind == "base_fee", literal("(base fee)")),
    else_=literal("(all models)"),
).label("model")
"""What ``by_model`` calls an invoice line, in the revenue and the margin report alike: its
model; a plan's base fee is "(base fee)"; usage priced without a model filter is
"(all models)"."""


INVOICE_CREDIT = "(invoice credit)"
"""What ``by_plan`` and ``by_model`` call a credit note line on an invoice as a whole."""


async def _credits(session: AsyncSession, p: Period) -> dict[str, dict[tuple[str, str], int]]:
    """What credit notes on the period's billable invoices took off, by the report's keys
    (``(key, currency) -> amount_minor``, before tax): a line credited against an invoice
    line counts under that line's plan and model; a credit on the invoice as a whole under
    ``INVOICE_CREDIT``."""
    rows = await session.execute(
        select(
            CreditNoteLine.amount_minor,
            Invoice.currency,
            CreditNoteLine.invoice_line_id,
            Plan.name,
            PlanVersion.version,
            Customer.name,
            LINE_MODEL,
        )
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .join(Invoice, Invoice.id == CreditNote.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .outerjoin(InvoiceLine, InvoiceLine.id == CreditNoteLine.invoice_line_id)
        .outerjoin(PlanVersion, PlanVersion.id == InvoiceLine.plan_version_id)
        .outerjoin(Plan, Plan.id == PlanVersion.plan_id)
        .where(Invoice.period == str(p), Invoice.status.in_(_BILLABLE_STATUSES))
    )
    out: dict[str, dict[tuple[str, str], int]] = {
        name: defaultdict(int) for name in ("plan", "customer", "model", "total")
    }
    for amount, currency, line_id, plan, version, customer, model in rows.all():
        on_line = line_id is not None
        out["plan"][(f"{plan} v{version}" if on_line else INVOICE_CREDIT, currency)] += amount
        out["customer"][(customer, currency)] += amount
        out["model"][(model if on_line else INVOICE_CREDIT, currency)] += amount
        out["total"][("total", currency)] += amount
    return out


def _net(
    rows: list[RevenueRow], credits: dict[tuple[str, str], int], *, only_listed: bool = False
) -> list[RevenueRow]:
    """``rows`` less ``credits``, key by key; a credited key with no revenue row (a credit
    on the invoice as a whole) becomes a negative row of its own, unless ``only_listed``
    (``rows`` is a selection: the others' credits belong to rows left out)."""
    left = dict(credits)
    out = []
    for row in rows:
        credit = left.pop((row.key, row.currency), 0)
        out.append(
            RevenueRow(key=row.key, currency=row.currency, amount_minor=row.amount_minor - credit)
        )
    if not only_listed:
        for (key, currency), credit in sorted(left.items()):
            out.append(RevenueRow(key=key, currency=currency, amount_minor=-credit))
    return out


async def revenue_revision(session: AsyncSession, p: Period) -> tuple[object, ...]:
    """What the period's revenue report depends on, in two small aggregates: its invoices'
    count per status (a close, a payment or a void moves one) and its credit notes' count and
    newest id. Invoice lines never change, so an unchanged revision means an unchanged
    report: the console memoizes the report under it."""
    statuses = await session.execute(
        select(Invoice.status, func.count())
        .where(Invoice.period == str(p))
        .group_by(Invoice.status)
        .order_by(Invoice.status)
    )
    notes = (
        await session.execute(
            select(func.count(CreditNote.id), func.max(CreditNote.id))
            .join(Invoice, Invoice.id == CreditNote.invoice_id)
            .where(Invoice.period == str(p))
        )
    ).one()
    return (tuple((status, int(n)) for status, n in statuses.all()), int(notes[0]), notes[1])


async def invoiced_customers(session: AsyncSession, p: Period) -> int:
    """How many customers have a billable invoice for the period."""
    count = await session.scalar(
        select(func.count(func.distinct(Invoice.customer_id))).where(
            Invoice.period == str(p), Invoice.status.in_(_BILLABLE_STATUSES)
        )
    )
    return int(count or 0)


async def revenue_totals(session: AsyncSession, p: Period) -> list[RevenueRow]:
    """``revenue(...).total`` alone (per currency, net of credit notes), without the
    breakdowns: two aggregates, for pages that show only the totals."""
    invoiced = await session.execute(
        select(*split_sum(InvoiceLine.amount_minor), Invoice.currency)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(Invoice.period == str(p), Invoice.status.in_(_BILLABLE_STATUSES))
        .group_by(Invoice.currency)
    )
    credited = await session.execute(
        select(*split_sum(CreditNoteLine.amount_minor), Invoice.currency)
        .join(CreditNote, CreditNote.id == CreditNoteLine.credit_note_id)
        .join(Invoice, Invoice.id == CreditNote.invoice_id)
        .where(Invoice.period == str(p), Invoice.status.in_(_BILLABLE_STATUSES))
        .group_by(Invoice.currency)
    )
    credits = {("total", c): joined(hi, lo) for hi, lo, c in credited.all()}
    rows = [
        RevenueRow(key="total", currency=c, amount_minor=joined(hi, lo))
        for hi, lo, c in invoiced.all()
    ]
    return _net(sorted(rows, key=lambda r: r.currency), credits)


async def revenue(
    session: AsyncSession, p: Period, *, top_customers: int | None = None
) -> RevenueReport:
    """Invoiced revenue (finalized and paid invoices) for a period, net of the credit notes
    issued on those invoices, by plan, customer and model, summed exactly per currency
    (``split_sum`` in SQL; credits in Python). Amounts are before tax. ``invoiced`` and
    ``credited`` give the two parts of ``total``. With ``top_customers``, ``by_customer``
    holds only the customers with the most invoiced, each still net of its credits."""
    base = (
        select(*split_sum(InvoiceLine.amount_minor), Invoice.currency)
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(Invoice.period == str(p), Invoice.status.in_(_BILLABLE_STATUSES))
    )

    async def grouped(*keys: Any, limit: int | None = None) -> list[RevenueRow]:
        stmt = base.add_columns(*keys).group_by(Invoice.currency, *keys).order_by(*keys)
        if limit is not None:  # the largest first
            stmt = stmt.order_by(None).order_by(func.sum(InvoiceLine.amount_minor).desc(), *keys)
            stmt = stmt.limit(limit)
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
    invoiced = [
        RevenueRow(key="total", currency=c, amount_minor=joined(hi, lo)) for hi, lo, c in total_rows
    ]
    credits = await _credits(session, p)
    return RevenueReport(
        period=str(p),
        by_plan=_net(await grouped(Plan.name, PlanVersion.version), credits["plan"]),
        by_customer=_net(
            await grouped(Customer.name, limit=top_customers),
            credits["customer"],
            only_listed=top_customers is not None,
        ),
        by_model=_net(await grouped(LINE_MODEL), credits["model"]),
        total=_net(invoiced, credits["total"]),
        invoiced=invoiced,
        credited=[
            RevenueRow(key="credited", currency=c, amount_minor=amount)
            for (_, c), amount in sorted(credits["total"].items())
        ],
    )
