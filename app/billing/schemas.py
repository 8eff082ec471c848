from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field, computed_field

from app.money.display import minor_string


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


class SyncOut(BaseModel):
    pushed: list[int]
    failed: dict[str, str]


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
