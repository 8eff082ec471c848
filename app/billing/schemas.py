from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field


class InvoiceLineOut(BaseModel):
    position: int
    kind: str
    description: str
    plan_version_id: int
    unit: str | None
    model: str | None
    variant: str | None
    quantity: Decimal
    billable_quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    amount_minor: int
    period_start: datetime
    period_end: datetime


class InvoiceOut(BaseModel):
    id: int | None
    number: str | None
    customer_id: int
    period: str
    period_start: datetime
    period_end: datetime
    status: str
    currency: str
    subtotal_minor: int
    total_minor: int
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
    total_minor: int
    stripe_invoice_id: str | None


class InvoiceList(BaseModel):
    data: list[InvoiceSummary]


class NotRatableOut(BaseModel):
    customer_id: int
    plan_version_id: int | None
    reason: str


class CloseOut(BaseModel):
    period: str
    created: list[int]
    already_closed: list[int]
    without_plan: list[int]
    not_ratable: list[NotRatableOut] = Field(
        description="Customers not invoiced because their plan cannot be priced exactly; "
        "fix the plan and close again to invoice them"
    )


class RevenueRow(BaseModel):
    key: str
    currency: str
    amount_minor: int


class RevenueReport(BaseModel):
    period: str
    by_plan: list[RevenueRow]
    by_customer: list[RevenueRow]
    by_model: list[RevenueRow]
    total: list[RevenueRow] = Field(description="Per currency: invoiced less credited")
    invoiced: list[RevenueRow] = Field(
        default=[], description="Per currency: the invoices' subtotals, before credit notes"
    )
    credited: list[RevenueRow] = Field(
        default=[],
        description="Per currency: what credit notes on these invoices took off (before tax)",
    )


class MarginLine(BaseModel):
    key: str
    revenue_minor: int
    compute_seconds: Decimal
    cost_minor: int
    margin_minor: int


class BreakEven(BaseModel):
    investment: Decimal
    yearly_upkeep: Decimal
    monthly_revenue_minor: int
    monthly_operating_cost_minor: int
    months: Decimal | None = Field(
        description="Payback period C / (R - O - M/12) in months; null when it never pays back"
    )
    horizon_months: int
    required_monthly_revenue_minor: int = Field(
        description="O + M/12 + C/H: the monthly revenue that recovers C within H months"
    )


class MarginReport(BaseModel):
    period: str
    currency: str
    revenue_minor: int
    compute_cost_minor: int
    fixed_cost_minor: int
    operating_cost_minor: int
    margin_minor: int
    by_model: list[MarginLine]
    by_plan: list[MarginLine]
    break_even: BreakEven


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
    local_total_minor: int
    stripe_invoice_id: str | None
    stripe_total_minor: int | None
    result: str


class ReconcileReport(BaseModel):
    period: str
    lines: list[ReconcileLine]
    all_match: bool
