"""Hourly rollups kept exact: a ledger row is added to ``usage_hourly`` in the same
transaction that inserts it, and only if it was inserted.

The meter writer's Postgres hot path does this in one statement (``writer._PG_INSERT``: the
INSERT's RETURNING feeds the rollup upsert). :func:`insert_usage` is the same promise
through SQLAlchemy, for SQLite's writer and for anything else that writes ledger rows
(fixtures, backfills): insert, learn which rows the database took, upsert their sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.orm import UsageEvent, UsageHourly

ROLLUP_KEY = ("customer_id", "hour", "api_key_id", "model", "version", "variant", "billable")
ROLLUP_MEASURES = ("requests", "errors", "items", "compute_us")


def hour_of(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in (its rollup bucket)."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rollup_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Sum ledger rows into rollup rows, sorted by key (so concurrent upserts lock rollup
    rows in one order and cannot deadlock)."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for r in rows:
        key = (
            r["customer_id"],
            hour_of(r["created_at"]),
            r["api_key_id"],
            r["model"] or "",
            r["version"] or "",
            r["variant"] or "",
            bool(r["billable"]),
        )
        m = sums.setdefault(key, [0, 0, 0, 0])
        m[0] += 1
        m[1] += r["status_code"] >= 400
        m[2] += r["items"]
        m[3] += r["compute_us"]
    return [
        dict(zip(ROLLUP_KEY, key, strict=True)) | dict(zip(ROLLUP_MEASURES, m, strict=True))
        for key, m in sorted(sums.items())
    ]


async def insert_usage(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert the ledger rows whose ``(request_id, created_at)`` is new and add exactly
    those to the hourly rollups, in the caller's transaction. Returns how many were new."""
    if not rows:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(UsageEvent)
        .on_conflict_do_nothing(index_elements=["request_id", "created_at"])
        .returning(UsageEvent.request_id, UsageEvent.created_at)
    )
    taken = {
        (request_id, at.astimezone(UTC))
        for request_id, at in (await conn.execute(stmt, list(rows))).all()
    }
    new: list[Mapping[str, Any]] = []
    for r in rows:  # a row repeated within the batch was inserted once: count it once
        key = (r["request_id"], r["created_at"].astimezone(UTC))
        if key in taken:
            taken.discard(key)
            new.append(r)
    if new:
        await upsert_rollups(conn, rollup_rows(new))
    return len(new)


async def upsert_rollups(conn: AsyncConnection, sums: list[dict[str, Any]]) -> None:
    """Add ``sums`` (from :func:`rollup_rows`) to the rollups, creating rows as needed."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(UsageHourly).values(sums)
    table = UsageHourly.__table__.c
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=list(ROLLUP_KEY),
            set_={m: table[m] + stmt.excluded[m] for m in ROLLUP_MEASURES},
        )
    )


# Rebuilds every rollup from the ledger in one statement (Postgres): for benchmarks and
# backfills that load rows in bulk, around the writer. Run it on an empty usage_hourly.
# Written in hour order, as the writer writes them over time (a benchmark that stored each
# customer's rollups together would read faster than a real ledger does).
FILL_FROM_LEDGER_SQL = """
INSERT INTO usage_hourly (customer_id, hour, api_key_id, model, version, variant, billable,
                          requests, errors, items, compute_us)
SELECT customer_id, date_trunc('hour', created_at, 'UTC'), api_key_id, coalesce(model, ''),
       coalesce(version, ''), coalesce(variant, ''), billable, count(*),
       count(*) FILTER (WHERE status_code >= 400), sum(items), sum(compute_us)
FROM usage_events
GROUP BY 1, 2, 3, 4, 5, 6, 7
ORDER BY 2, 1, 3
"""
