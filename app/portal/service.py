"""What a customer's billing key may read about its own customer: plan, spend, invoices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.repository import current_plan
from app.billing.corrections import CreditNoteNotFound
from app.billing.errors import InvoiceNotFound, NoPlan, PlanNotRatable
from app.billing.rating import aggregate_usage
from app.limits.quota import SpendNotComputable, usage_spend
from app.money.display import minor_string
from app.money.periods import Period
from app.money.pricing import to_minor
from app.orm import ApiKey, CreditNote, Invoice, Plan, PlanVersion
from app.portal.repository import invoices_page, keys_page, plan_assignments
from app.portal.schemas import BillingPlan, PlanTerm, PriceComponentOut, Spend


def _term(effective_from: datetime, plan: Plan, version: PlanVersion) -> PlanTerm:
    return PlanTerm(
        plan_id=plan.id,
        plan_name=plan.name,
        version=version.version,
        plan_version_id=version.id,
        effective_from=effective_from,
        currency=version.currency,
        base_fee=version.base_fee,
        components=[PriceComponentOut.model_validate(c) for c in version.components],
        spend_cap=version.spend_cap,
        requests_per_minute=version.requests_per_minute,
        items_per_minute=version.items_per_minute,
    )


async def billing_plan(session: AsyncSession, customer_id: int, now: datetime) -> BillingPlan:
    """The plan version in force at ``now`` and those scheduled after it."""
    current: PlanTerm | None = None
    scheduled: list[PlanTerm] = []
    for effective_from, plan, version in await plan_assignments(session, customer_id):
        if effective_from <= now:
            current = _term(effective_from, plan, version)
        else:
            scheduled.append(_term(effective_from, plan, version))
    return BillingPlan(customer_id=customer_id, current=current, scheduled=scheduled)


async def spend(session: AsyncSession, customer_id: int, now: datetime) -> Spend:
    """The period's usage charges so far, computed from the ledger exactly as the spend cap
    is enforced (``app.limits.quota``): since the later of the period's start and the
    current plan version's start, base fee excluded. 404 ``no_plan`` without a plan."""
    plan = await current_plan(session, customer_id, now)
    if plan is None:
        raise NoPlan("no plan is in force for this customer")
    period = Period.containing(now)
    since = max(period.start, plan.effective_from)
    totals: dict[tuple[str | None, str | None], list[int]] = {
        (r.model, r.variant): [r.requests, r.items, r.compute_us]
        for r in await aggregate_usage(session, customer_id, since, now)
    }
    try:
        spent = usage_spend(plan, totals)
    except SpendNotComputable as exc:
        raise PlanNotRatable(exc.message, details=exc.details) from None
    currency = plan.currency
    spent_minor = to_minor(spent, currency)
    cap_minor = None if plan.spend_cap is None else to_minor(plan.spend_cap, currency)
    remaining = None if cap_minor is None else max(cap_minor - spent_minor, 0)
    return Spend(
        customer_id=customer_id,
        period=str(period),
        currency=currency,
        plan_version_id=plan.plan_version_id,
        since=since,
        spend_minor=spent_minor,
        spend=minor_string(spent_minor, currency),
        spend_exact=spent,
        spend_cap_minor=cap_minor,
        spend_cap=None if cap_minor is None else minor_string(cap_minor, currency),
        remaining_minor=remaining,
        remaining=None if remaining is None else minor_string(remaining, currency),
    )


VISIBLE_STATUSES = ("finalized", "paid", "void", "uncollectible")
"""What a customer sees of its invoices: every issued one, never a draft."""


async def own_invoice(session: AsyncSession, customer_id: int, invoice_id: int) -> Invoice:
    """The customer's issued invoice ``invoice_id``. Another customer's invoice, or a draft,
    is answered exactly like one that does not exist (``billing.service.get_invoice``'s 404),
    so an id tells a customer nothing about anyone else."""
    invoice = await session.get(Invoice, invoice_id)
    if (
        invoice is None
        or invoice.customer_id != customer_id
        or invoice.status not in VISIBLE_STATUSES
    ):
        raise InvoiceNotFound(f"invoice {invoice_id} does not exist")
    return invoice


async def own_credit_note(session: AsyncSession, customer_id: int, credit_note_id: int) -> None:
    """Raise the 404 of a missing credit note unless ``credit_note_id`` is the customer's."""
    note = await session.get(CreditNote, credit_note_id)
    if note is None or note.customer_id != customer_id:
        raise CreditNoteNotFound(f"credit note {credit_note_id} does not exist")


PER_PAGE = 50
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its rows, the 1-based page number and the total row count."""

    items: list[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _page_number(page: int) -> int:
    return max(1, page)


async def own_invoices(
    session: AsyncSession, customer_id: int, page: int = 1, per_page: int = PER_PAGE
) -> Page[Invoice]:
    """The customer's issued invoices (``VISIBLE_STATUSES``, never a draft), newest first,
    a page at a time: what ``/v1/billing/invoices`` lists, paginated."""
    page = _page_number(page)
    rows, total = await invoices_page(
        session, customer_id, VISIBLE_STATUSES, offset=(page - 1) * per_page, limit=per_page
    )
    return Page(rows, page, per_page, total)


async def own_keys(
    session: AsyncSession, customer_id: int, page: int = 1, per_page: int = PER_PAGE
) -> Page[ApiKey]:
    """The customer's keys (revoked and expired ones too), a page at a time. The rows carry
    the public prefix and last four characters, never a secret (none is stored)."""
    page = _page_number(page)
    rows, total = await keys_page(
        session, customer_id, offset=(page - 1) * per_page, limit=per_page
    )
    return Page(rows, page, per_page, total)
