"""Request and response bodies of invoice corrections: void and credit notes.

Money follows the API convention: every ``X_minor`` integer has an ``X`` string at the
currency's exponent; amounts in requests are integers of minor units, before tax."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.money.display import PlainDecimal
from app.validation import INT64_MAX, DbId

Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
# A credited amount: positive minor units that an invoice's BIGINT columns can hold.
CreditMinor = Annotated[int, Field(strict=True, gt=0, le=INT64_MAX)]


class VoidIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "Sent to the wrong customer"}]}
    )

    reason: Reason = Field(description="Why the invoice is void; kept on the invoice")


class CreditLineIn(BaseModel):
    """One credited invoice line: name it by ``invoice_line_position`` (1, 2, ... as printed)
    or ``invoice_line_id``, never both."""

    model_config = ConfigDict(extra="forbid")

    invoice_line_position: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] | None = None
    invoice_line_id: DbId | None = None
    amount_minor: CreditMinor = Field(
        description="Credited amount in minor units, before tax; at most what remains "
        "uncredited on the line"
    )
    quantity: Annotated[Decimal, Field(gt=0, lt=Decimal(10) ** 18, decimal_places=6)] | None = None
    description: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
        | None
    ) = Field(default=None, description="Default: the invoice line's description")

    @model_validator(mode="after")
    def _one_reference(self) -> Self:
        if (self.invoice_line_position is None) == (self.invoice_line_id is None):
            raise ValueError("give exactly one of invoice_line_position and invoice_line_id")
        return self


class CreditNoteCreate(BaseModel):
    """A credit note against lines of the invoice (``lines``), or against the invoice as a
    whole (``amount_minor``), never both. Amounts are before tax; the tax is added by the
    invoice's rate (see docs/api.md, "Credit notes")."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "reason": "Outage on 2026-09-14: usage refunded",
                    "lines": [
                        {"invoice_line_position": 2, "amount_minor": 1250},
                        {
                            "invoice_line_position": 3,
                            "amount_minor": 300,
                            "quantity": "2000",
                            "description": "Requests failed during the outage",
                        },
                    ],
                },
                {"reason": "Goodwill credit", "amount_minor": 500},
            ]
        },
    )

    reason: Reason = Field(description="Why the credit is given; printed on the credit note")
    lines: Annotated[list[CreditLineIn], Field(min_length=1, max_length=500)] | None = None
    amount_minor: CreditMinor | None = Field(
        default=None,
        description="A credit on the invoice as a whole, in minor units, before tax",
    )

    @model_validator(mode="after")
    def _lines_or_amount(self) -> Self:
        if (self.lines is None) == (self.amount_minor is None):
            raise ValueError("give exactly one of lines and amount_minor")
        return self


class CreditNoteLineOut(BaseModel):
    position: int
    invoice_line_id: int | None = Field(description="None: a credit on the invoice as a whole")
    invoice_line_position: int | None
    description: str
    quantity: PlainDecimal | None
    amount_minor: int
    amount: str


class CreditNoteSummary(BaseModel):
    id: int
    number: str
    invoice_id: int
    invoice_number: str | None
    customer_id: int
    period: str = Field(description="The credited invoice's period")
    currency: str
    reason: str
    issued_at: datetime
    subtotal_minor: int
    subtotal: str
    tax_minor: int
    tax: str
    total_minor: int
    total: str
    stripe_credit_note_id: str | None


class CreditNoteOut(CreditNoteSummary):
    lines: list[CreditNoteLineOut]


class CreditNoteList(BaseModel):
    data: list[CreditNoteSummary]


class InvoiceCredits(BaseModel):
    """What credit notes took off an invoice and what remains creditable."""

    invoice_id: int
    currency: str
    total_minor: int
    total: str
    credited_minor: int
    credited: str
    remaining_minor: int
    remaining: str
    credit_notes: list[CreditNoteSummary]


class VoidOut(BaseModel):
    id: int
    number: str | None
    status: str
    voided_at: datetime
    void_reason: str
    stripe_invoice_id: str | None = Field(
        description="When set, the next sync (POST /finance/sync) voids it in Stripe too"
    )
