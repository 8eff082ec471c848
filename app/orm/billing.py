from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, ExactNumeric, UTCDateTime, utcnow

INVOICE_STATUSES = ("draft", "finalized", "paid", "void", "uncollectible")


class Invoice(Base):
    """One customer's invoice for one calendar month (UTC). Finalized invoices never change
    their lines, totals or parties; only the payment status moves on (paid, void,
    uncollectible), and corrections are credit notes (:class:`CreditNote`).

    ``seller`` and ``bill_to`` are snapshots of the seller profile and the customer's billing
    details taken when the invoice was finalized; the tax treatment (``tax_rate`` percent, or
    ``tax_exempt`` with ``tax_note``) is snapshotted with them."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("customer_id", "period"),
        CheckConstraint(
            "status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')", name="status"
        ),
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"), index=True)
    period: Mapped[str] = mapped_column(String(7), index=True)  # YYYY-MM
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="draft")
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    stripe_status: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    tax_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    tax_rate: Mapped[Decimal | None] = mapped_column(ExactNumeric(7, 4))  # percent
    tax_exempt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    tax_note: Mapped[str | None] = mapped_column(String(200))
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seller: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    bill_to: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    void_reason: Mapped[str | None] = mapped_column(String(500))


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    invoice_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    plan_version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("plan_versions.id"))
    kind: Mapped[str] = mapped_column(String(16))  # base_fee | usage
    description: Mapped[str] = mapped_column(String(500))
    unit: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(32))
    quantity: Mapped[Decimal] = mapped_column(ExactNumeric(24, 6))
    billable_quantity: Mapped[Decimal] = mapped_column(ExactNumeric(24, 6))
    unit_price: Mapped[Decimal | None] = mapped_column(ExactNumeric(24, 10))
    amount: Mapped[Decimal] = mapped_column(ExactNumeric(30, 10))  # exact, before rounding
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # rounded once, ROUND_HALF_UP
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())


class InvoiceSequence(Base):
    """Gapless invoice numbers per year: the row is locked while a number is taken."""

    __tablename__ = "invoice_sequences"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(Integer)


class CreditNote(Base):
    """A correction to a finalized invoice: an immutable document with its own gapless
    number series (``CN-YYYY-NNNNNN``). Its total never exceeds what remains creditable on
    the invoice (total minus earlier credit notes)."""

    __tablename__ = "credit_notes"
    __table_args__ = (
        CheckConstraint("total_minor = subtotal_minor + tax_minor", name="total"),
        CheckConstraint("subtotal_minor >= 0 AND tax_minor >= 0", name="positive"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    invoice_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("invoices.id"), index=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(String(500))
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    tax_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stripe_credit_note_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CreditNoteLine(Base):
    __tablename__ = "credit_note_lines"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="positive"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    credit_note_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("credit_notes.id"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    # The invoice line it corrects (None: a credit against the invoice as a whole).
    invoice_line_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("invoice_lines.id"), index=True
    )
    description: Mapped[str] = mapped_column(String(500))
    quantity: Mapped[Decimal | None] = mapped_column(ExactNumeric(24, 6))
    amount_minor: Mapped[int] = mapped_column(BigInteger)  # before tax


class CreditNoteSequence(Base):
    """Gapless credit note numbers per year, like :class:`InvoiceSequence`."""

    __tablename__ = "credit_note_sequences"

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_number: Mapped[int] = mapped_column(Integer)


class StripeEvent(Base):
    """Every verified Stripe webhook event, by id: a replayed event is recognised and ignored."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(32))  # applied | ignored
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
