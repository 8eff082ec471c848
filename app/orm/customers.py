from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, CheckConstraint, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, ExactNumeric, UTCDateTime, utcnow


class Customer(Base):
    """A customer of the platform, or the operator itself (``is_operator``: the account whose
    keys may hold the ``admin`` and ``finance`` scopes). The billing details are what an
    invoice's customer block shows; a finalized invoice keeps its own snapshot of them."""

    __tablename__ = "customers"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
        # A tax treatment is a rate or an exemption, never both.
        CheckConstraint("NOT (tax_exempt AND tax_rate IS NOT NULL)", name="tax_treatment"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # Billing details (all optional until an invoice is sent).
    legal_name: Mapped[str | None] = mapped_column(String(200))
    billing_email: Mapped[str | None] = mapped_column(String(320))
    address: Mapped[str | None] = mapped_column(Text)  # multi-line
    country: Mapped[str | None] = mapped_column(String(2))  # ISO 3166-1 alpha-2
    tax_id: Mapped[str | None] = mapped_column(String(64))
    # Percent, e.g. 19 or 7.25; None with tax_exempt false: no tax line.
    tax_rate: Mapped[Decimal | None] = mapped_column(ExactNumeric(7, 4))
    tax_exempt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    tax_note: Mapped[str | None] = mapped_column(String(200))  # e.g. "Reverse charge"
