from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.orm.base import Base, BigIntPK, UTCDateTime

# The ledger's monthly partitions (and the DEFAULT one) on Postgres: tables the ORM does not
# map, made by the migration and app/metering/partitions.py, and left out of autogenerate.
PARTITION_NAME = re.compile(r"^usage_events_(p\d{4}_\d{2}|default)$")


class UsageEvent(Base):
    """The usage ledger: one append-only row per authenticated request.

    Only metadata is kept (sizes, timings, status), never request inputs or outputs.

    On Postgres the table is partitioned by month of ``created_at`` (see the migration
    ``ledger_partitions`` and ``app/metering/partitions.py``); a partitioned table's unique
    constraints must include the partition key, so the dedupe key is
    ``(request_id, created_at)``. That still writes a row at most once: a request's row is
    built once, with its time, and a retried batch re-sends the identical row. SQLite keeps
    one table with the same constraint, so both databases dedupe the same way.

    ``api_key_id`` and ``customer_id`` are checked through :class:`UsageHourly`'s foreign
    keys, not here: every ledger row is written in the same statement or transaction as the
    rollup row that counts it, so a row naming an unknown key fails there and rolls back,
    and a customer or key with usage cannot be deleted. The check is then paid once per
    rollup row (hour, key, model) instead of once per request (migration
    ``ledger_keys_on_rollups``).
    The physical primary key on Postgres is ``(id, created_at)``; ``id`` alone still
    identifies a row (one sequence feeds every partition), so the mapper keys on it.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("request_id", "created_at"),
        Index("ix_usage_events_customer_id_created_at", "customer_id", "created_at"),
        Index("ix_usage_events_created_at", "created_at"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))
    api_key_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int] = mapped_column(BigInteger)
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


class UsageHourly(Base):
    """Hourly rollups of the ledger, per customer, key, model, version, variant and
    billability: what billing, the spend cap and ``/v1/usage`` read, so their cost grows
    with customers x hours rather than with requests.

    Maintained in the same statement (Postgres) or transaction (SQLite) as the ledger rows
    it sums, from the rows actually inserted, so a rollup always equals the raw sum of its
    rows (``app/metering/rollups.py``). NULL model, version and variant are stored as ""
    (a NULL would never conflict, so the upsert could not find its row); readers map ""
    back to NULL. It holds the ledger's foreign keys to customers and API keys (see
    :class:`UsageEvent`); an upsert that adds to an existing row changes no key column, so
    the database checks a key once per rollup row, not per request.
    """

    __tablename__ = "usage_hourly"
    __table_args__ = (Index("ix_usage_hourly_hour", "hour"),)

    customer_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customers.id"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("api_keys.id"), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    variant: Mapped[str] = mapped_column(String(32), primary_key=True)
    billable: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    items: Mapped[int] = mapped_column(BigInteger)
    compute_us: Mapped[int] = mapped_column(BigInteger)
