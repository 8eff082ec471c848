from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, ExactNumeric, UTCDateTime, utcnow

INVOICE_STATUSES = ("draft", "finalized", "paid", "void", "uncollectible")


class Invoice(Base):
    """One customer's invoice for one calendar month (UTC). Finalized invoices never change
    their lines or totals; only the payment status moves on."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("customer_id", "period"),
        CheckConstraint(
            "status IN ('draft', 'finalized', 'paid', 'void', 'uncollectible')", name="status"
        ),
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


class StripeEvent(Base):
    """Every verified Stripe webhook event, by id: a replayed event is recognised and ignored."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(32))  # applied | ignored
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
