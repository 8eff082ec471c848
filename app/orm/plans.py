from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, ExactNumeric, UTCDateTime, utcnow

# Prices: exact decimals with room for fractions of a cent per unit (below 10^14, 10 places;
# app.plans.schemas.Amount refuses anything else at the API).
Money = ExactNumeric(24, 10)


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PlanVersion(Base):
    """An immutable version of a plan. Editing a plan writes a new version; customers and
    invoices keep referring to the version they were on."""

    __tablename__ = "plan_versions"
    __table_args__ = (UniqueConstraint("plan_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    plan_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("plans.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    base_fee: Mapped[Decimal] = mapped_column(Money)
    components: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    items_per_minute: Mapped[int | None] = mapped_column(Integer)
    spend_cap: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class CustomerPlan(Base):
    """Which plan version a customer is on from ``effective_from`` until the next row."""

    __tablename__ = "customer_plans"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"), index=True)
    plan_version_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("plan_versions.id"))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
