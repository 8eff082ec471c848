"""Invoice documents as the API shows them.

Money convention: every integer ``X_minor`` (minor units of the invoice currency) comes with
``X``, the same amount as a decimal string at the currency's exponent ("49.00", "0.05",
"1250" for JPY). Exact values that are not settled amounts (quantities, unit prices, a line's
``exact_amount`` before its one rounding) are plain decimal strings with their significant
digits only: never exponent notation, never the database's trailing zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, computed_field

from app.billing.drafts import DRAFT_NUMBER, DraftInvoice
from app.billing.service import CloseResult
from app.money.display import PlainDecimal, minor_string
from app.orm import Invoice, InvoiceLine


class SellerOut(BaseModel):
    """The seller profile as it was when the invoice was finalized."""

    name: str
    address: str | None = Field(description='Lines separated by "\n"')
    email: str | None
    tax_id: str | None
    payment_terms_days: int
    payment_instructions: str | None


class BillToOut(BaseModel):
    """The customer's billing details as they were when the invoice was finalized."""

    customer_id: int
    name: str = Field(description="The account name")
    legal_name: str | None
    billing_email: str | None = Field(
        description="The billing email, or the account email when none was set"
    )
    address: str | None = Field(description='Lines separated by "\n"')
    country: str | None = Field(description="ISO 3166-1 alpha-2")
    tax_id: str | None


class InvoiceLineOut(BaseModel):
    position: int
    kind: str
    description: str
    plan_version_id: int
    unit: str | None
    model: str | None
    variant: str | None
    quantity: PlainDecimal
    billable_quantity: PlainDecimal
    unit_price: PlainDecimal | None
    exact_amount: PlainDecimal = Field(
        description="The line's exact amount before its one rounding to the minor unit"
    )
    amount_minor: int = Field(description="The line's amount, rounded once (half up)")
    amount: str
    period_start: datetime
    period_end: datetime


class InvoiceOut(BaseModel):
    id: int | None
    number: str | None = Field(description='"(draft)" in a dry run; null in a preview')
    customer_id: int
    period: str
    period_start: datetime
    period_end: datetime
    status: str
    currency: str
    issued_at: datetime | None = Field(description="null in a preview")
    due_at: datetime | None = Field(description="issued_at + the payment terms")
    subtotal_minor: int
    subtotal: str
    tax_minor: int = Field(
        description="Tax charged once on the subtotal, rounded half up to the minor unit"
    )
    tax: str
    total_minor: int = Field(description="subtotal_minor + tax_minor")
    total: str
    tax_rate: PlainDecimal | None = Field(description='Percent, e.g. "19"; null: no rate')
    tax_exempt: bool
    tax_note: str | None = Field(description='e.g. "Reverse charge" for an exempt customer')
    seller: SellerOut | None = Field(
        description="null only on invoices finalized before seller profiles existed"
    )
    bill_to: BillToOut | None = Field(
        description="null only on invoices finalized before billing details existed"
    )
    stripe_invoice_id: str | None = None
    stripe_status: str | None = None
    collection: str
    finalized_at: datetime | None = None
    lines: list[InvoiceLineOut]


class InvoiceSummary(BaseModel):
    id: int
    number: str | None
    customer_id: int
    period: str
    status: str
    currency: str
    issued_at: datetime | None
    due_at: datetime | None
    subtotal_minor: int
    subtotal: str
    tax_minor: int
    tax: str
    total_minor: int
    total: str
    stripe_invoice_id: str | None


class InvoiceList(BaseModel):
    data: list[InvoiceSummary]


def collection(invoice: Invoice, stripe_enabled: bool) -> str:
    """Who collects the invoice, in words."""
    if invoice.stripe_invoice_id is not None:
        return "stripe"
    if not stripe_enabled:
        return "local: Stripe is not configured, this invoice is not collected"
    return "local: not yet pushed to Stripe" if invoice.status == "finalized" else "local"


def _money(currency: str, **amounts: int) -> dict[str, Any]:
    """``subtotal_minor=24`` -> ``{"subtotal_minor": 24, "subtotal": "0.24"}``."""
    out: dict[str, Any] = {}
    for name, minor in amounts.items():
        out[name] = minor
        out[name.removesuffix("_minor")] = minor_string(minor, currency)
    return out


def _line_out(position: int, line: Any, currency: str) -> InvoiceLineOut:
    """One line, from a stored :class:`InvoiceLine` or a rated one (same attributes)."""
    return InvoiceLineOut(
        position=position,
        kind=line.kind,
        description=line.description,
        plan_version_id=line.plan_version_id,
        unit=line.unit,
        model=line.model,
        variant=line.variant,
        quantity=line.quantity,
        billable_quantity=line.billable_quantity,
        unit_price=line.unit_price,
        exact_amount=line.amount,
        period_start=line.period_start,
        period_end=line.period_end,
        **_money(currency, amount_minor=line.amount_minor),
    )


def invoice_out(
    invoice: Invoice, lines: Sequence[InvoiceLine], *, stripe_enabled: bool
) -> InvoiceOut:
    """A stored invoice as the API shows it."""
    return InvoiceOut(
        collection=collection(invoice, stripe_enabled),
        id=invoice.id,
        number=invoice.number,
        customer_id=invoice.customer_id,
        period=invoice.period,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        status=invoice.status,
        currency=invoice.currency,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        tax_rate=invoice.tax_rate,
        tax_exempt=invoice.tax_exempt,
        tax_note=invoice.tax_note,
        seller=None if invoice.seller is None else SellerOut.model_validate(invoice.seller),
        bill_to=None if invoice.bill_to is None else BillToOut.model_validate(invoice.bill_to),
        stripe_invoice_id=invoice.stripe_invoice_id,
        stripe_status=invoice.stripe_status,
        finalized_at=invoice.finalized_at,
        lines=[_line_out(line.position, line, invoice.currency) for line in lines],
        **_money(
            invoice.currency,
            subtotal_minor=invoice.subtotal_minor,
            tax_minor=invoice.tax_minor,
            total_minor=invoice.total_minor,
        ),
    )


def draft_out(draft: DraftInvoice, *, preview: bool = False) -> InvoiceOut:
    """An invoice not written: a dry run's (number "(draft)", the dates a close would give
    it) or a preview's (no number, no dates)."""
    rated = draft.rated
    return InvoiceOut(
        id=None,
        number=None if preview else DRAFT_NUMBER,
        customer_id=rated.customer_id,
        period=str(rated.period),
        period_start=rated.period.start,
        period_end=rated.period.end,
        status="preview" if preview else "draft",
        collection=(
            "preview: not an invoice yet" if preview else "dry run: not written, not collected"
        ),
        currency=rated.currency,
        issued_at=None if preview else draft.issued_at,
        due_at=None if preview else draft.due_at,
        tax_rate=draft.tax_rate,
        tax_exempt=draft.tax_exempt,
        tax_note=draft.tax_note,
        seller=SellerOut.model_validate(draft.seller),
        bill_to=BillToOut.model_validate(draft.bill_to),
        lines=[_line_out(i, line, rated.currency) for i, line in enumerate(rated.lines, 1)],
        **_money(
            rated.currency,
            subtotal_minor=draft.subtotal_minor,
            tax_minor=draft.tax_minor,
            total_minor=draft.total_minor,
        ),
    )


def invoice_summary(invoice: Invoice) -> InvoiceSummary:
    return InvoiceSummary(
        id=invoice.id,
        number=invoice.number,
        customer_id=invoice.customer_id,
        period=invoice.period,
        status=invoice.status,
        currency=invoice.currency,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        stripe_invoice_id=invoice.stripe_invoice_id,
        **_money(
            invoice.currency,
            subtotal_minor=invoice.subtotal_minor,
            tax_minor=invoice.tax_minor,
            total_minor=invoice.total_minor,
        ),
    )


class NotRatableOut(BaseModel):
    customer_id: int
    plan_version_id: int | None
    reason: str


class CloseOut(BaseModel):
    period: str
    dry_run: bool = Field(description="true: nothing was written")
    closable_from: datetime = Field(
        description="The period's end plus the grace window: a close is refused before it"
    )
    created: list[int] = Field(description="Ids of the invoices written (none in a dry run)")
    invoiced: list[int] = Field(
        description="Customers invoiced by this close (in a dry run: who would be)"
    )
    already_closed: list[int]
    without_plan: list[int]
    not_ratable: list[NotRatableOut] = Field(
        description="Customers not invoiced because their plan cannot be priced exactly; "
        "fix the plan and close again to invoice them"
    )
    invoices: list[InvoiceOut] = Field(
        description="The invoices written; in a dry run, those a close would write now "
        '(number "(draft)", id null, status "draft")'
    )


def close_out(result: CloseResult, *, stripe_enabled: bool) -> CloseOut:
    """A close's (or a dry run's) result as the API and ``tollgate billing close`` show it."""
    invoices = (
        [draft_out(draft) for draft in result.drafts]
        if result.dry_run
        else [invoice_out(i, lines, stripe_enabled=stripe_enabled) for i, lines in result.written]
    )
    return CloseOut(
        period=result.period,
        dry_run=result.dry_run,
        closable_from=result.closable_from,
        created=result.created,
        invoiced=result.invoiced,
        already_closed=result.already_closed,
        without_plan=result.without_plan,
        not_ratable=[NotRatableOut.model_validate(entry) for entry in result.not_ratable],
        invoices=invoices,
    )


class SyncOut(BaseModel):
    pushed: list[int]
    failed: dict[str, str] = Field(description="Invoice id -> why its push or void failed")
    voided: list[int] = Field(default=[], description="Invoices voided in Stripe")
    credit_notes_pushed: list[int] = Field(default=[], description="Credit notes created in Stripe")
    credit_notes_failed: dict[str, str] = {}


class ReconcileLine(BaseModel):
    invoice_id: int
    number: str | None
    customer_id: int
    currency: str
    local_total_minor: int
    stripe_invoice_id: str | None
    stripe_total_minor: int | None
    result: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def local_total(self) -> str:
        return minor_string(self.local_total_minor, self.currency)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stripe_total(self) -> str | None:
        if self.stripe_total_minor is None:
            return None
        return minor_string(self.stripe_total_minor, self.currency)


class ReconcileReport(BaseModel):
    period: str
    lines: list[ReconcileLine]
    all_match: bool
