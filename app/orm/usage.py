from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, UTCDateTime


class UsageEvent(Base):
    """The usage ledger: one append-only row per authenticated request.

    Only metadata is kept (sizes, timings, status), never request inputs or outputs.
    ``request_id`` is unique, so a row can never be written twice.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_customer_id_created_at", "customer_id", "created_at"),
        Index("ix_usage_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("api_keys.id"))
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[str | None] = mapped_column(String(32))
    variant: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(16))
    items: Mapped[int] = mapped_column(Integer, default=0)
    compute_us: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_us: Mapped[int] = mapped_column(BigInteger, default=0)
    status_code: Mapped[int] = mapped_column(SmallInteger)
    billable: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
