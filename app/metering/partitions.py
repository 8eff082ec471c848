"""Monthly partitions of the usage ledger on Postgres: created ahead, detached for archive.

The migration ``ledger_partitions`` makes ``usage_events`` a table partitioned by month of
``created_at``, with a DEFAULT partition as a safety net: a row whose month has no
partition yet is still written (the ledger never refuses a row for want of DDL). This job
keeps the DEFAULT partition empty in practice by creating each month's partition ahead of
time, at start-up and daily. If rows did land in the DEFAULT partition (the job was down
for months), creating their month moves them into the new partition in the same
transaction, so no row is ever lost or counted twice.

Retention (``TOLLGATE_LEDGER_RETENTION_MONTHS``; unset keeps everything): monthly partitions
that end before the start of the month ``retention`` months ago are DETACHED, not dropped:
each becomes a plain table (same name) an operator can dump to archive and then drop.
Billing's hourly rollups are kept, so invoices and usage reports for archived months stay
readable; only raw-row reads (the margin report's device split) lose those months.

SQLite keeps one table, so every function here does nothing there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.clock import Clock
from app.orm.usage import PARTITION_NAME
from app.tasks import BackgroundLoop

log = logging.getLogger("tollgate.partitions")

DAY_S = 86_400.0
# One key for every replica's maintenance: concurrent runs take turns instead of racing on
# CREATE TABLE (the key is arbitrary; it only has to be constant).
_LOCK_KEY = 0x7011_6A7E_1ED6


def month_start(at: datetime) -> datetime:
    """The first instant (UTC) of ``at``'s month."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"usage_events_p{month:%Y_%m}"


def _month_of(name: str) -> datetime | None:
    if not PARTITION_NAME.match(name) or name.endswith("_default"):
        return None
    year, month = name.removeprefix("usage_events_p").split("_")
    return datetime(int(year), int(month), 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    month: datetime | None  # None: the DEFAULT partition


async def list_partitions(conn: AsyncConnection) -> list[Partition]:
    """The ledger's attached partitions, months in order, DEFAULT last."""
    if conn.dialect.name != "postgresql":
        return []
    names = (
        await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'usage_events'::regclass"
            )
        )
    ).scalars()
    parts = [Partition(n, _month_of(n)) for n in names]
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(parts, key=lambda p: p.month or far)


def _bounds(month: datetime) -> str:
    end = add_months(month, 1)
    return f"FOR VALUES FROM ('{month:%Y-%m-%d} 00:00:00+00') TO ('{end:%Y-%m-%d} 00:00:00+00')"


async def ensure_partitions(conn: AsyncConnection, now: datetime, ahead: int) -> list[str]:
    """Create the partitions of ``now``'s month and the ``ahead`` months after it that do
    not exist yet; return their names. Rows already in the DEFAULT partition for such a
    month move into it. Call inside a transaction."""
    if conn.dialect.name != "postgresql":
        return []
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    have = {p.name for p in await list_partitions(conn)}
    created = []
    first = month_start(now)
    for n in range(ahead + 1):
        month = add_months(first, n)
        name = partition_name(month)
        if name in have:
            continue
        await _create(conn, month, name)
        created.append(name)
    if created:
        log.info("ledger partitions created", extra={"partitions": created})
    return created


async def _create(conn: AsyncConnection, month: datetime, name: str) -> None:
    # Names and bounds come from dates formatted here, never from input.
    end = add_months(month, 1)
    window = {"start": month, "end": end}
    strays = await conn.scalar(
        text(
            "SELECT count(*) FROM usage_events_default "
            "WHERE created_at >= :start AND created_at < :end"
        ),
        window,
    )
    if not strays:
        await conn.execute(text(f"CREATE TABLE {name} PARTITION OF usage_events {_bounds(month)}"))
        return
    # A new partition cannot be created over rows the DEFAULT partition holds for its range:
    # build it beside, move the rows, then attach (all in the caller's transaction).
    await conn.execute(text(f"CREATE TABLE {name} (LIKE usage_events INCLUDING DEFAULTS)"))
    await conn.execute(
        text(
            f"WITH moved AS (DELETE FROM usage_events_default "  # noqa: S608
            f"WHERE created_at >= :start AND created_at < :end RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        window,
    )
    await conn.execute(text(f"ALTER TABLE usage_events ATTACH PARTITION {name} {_bounds(month)}"))


async def detach_before(conn: AsyncConnection, before: datetime) -> list[str]:
    """Detach every monthly partition that ends on or before ``before`` (archive: each
    stays a plain table of the same name). Return their names. Call inside a transaction."""
    if conn.dialect.name != "postgresql":
        return []
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    detached = []
    for part in await list_partitions(conn):
        if part.month is not None and add_months(part.month, 1) <= before:
            await conn.execute(text(f"ALTER TABLE usage_events DETACH PARTITION {part.name}"))
            detached.append(part.name)
    if detached:
        log.info("ledger partitions detached", extra={"partitions": detached})
    return detached


def retention_cutoff(now: datetime, retention_months: int) -> datetime:
    """Partitions ending on or before this instant are past retention: the current month
    and the ``retention_months`` full months before it are kept."""
    return add_months(month_start(now), -retention_months)


async def maintain(
    engine: AsyncEngine, now: datetime, ahead: int, retention_months: int | None
) -> tuple[list[str], list[str]]:
    """One maintenance pass: create ahead, then detach what retention no longer keeps."""
    if engine.dialect.name != "postgresql":
        return [], []
    async with engine.begin() as conn:
        created = await ensure_partitions(conn, now, ahead)
        detached = (
            await detach_before(conn, retention_cutoff(now, retention_months))
            if retention_months is not None
            else []
        )
    return created, detached


class PartitionMaintenance:
    """The daily job (first pass at start-up)."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, ahead: int, retention_months: int | None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._ahead = ahead
        self._retention = retention_months
        self._loop = BackgroundLoop(
            "ledger-partitions", self.run_once, interval_s=DAY_S, step_first=True
        )

    async def run_once(self) -> None:
        await maintain(self._engine, self._clock.now(), self._ahead, self._retention)

    def start(self) -> None:
        if self._engine.dialect.name == "postgresql":
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
