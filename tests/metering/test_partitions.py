"""Issue 17: the ledger partitioned by month on Postgres. The migration converts a populated
table without losing or duplicating a row, months are created ahead (rows that fell into
the DEFAULT partition move into their month), and old months detach for archive."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Connection, create_engine, text

from app.db.engine import build_engine
from app.metering import partitions
from tests.conftest import TEST_SECRET, alembic_config, run_migrations

BEFORE = "d4e5f6071829"  # the revision before ledger_partitions

_SUMS = (
    "SELECT count(*), count(DISTINCT request_id), sum(id), sum(items), sum(compute_us), "
    "sum(CASE WHEN billable THEN 1 ELSE 0 END), sum(CASE WHEN status_code >= 400 THEN 1 END), "
    "count(model), count(variant), max(id) FROM usage_events"
)
_BY_MONTH = (
    "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM'), count(*) FROM usage_events "
    "GROUP BY 1 ORDER BY 1"
)
_ROLLUP_VS_RAW = """
SELECT (SELECT coalesce(sum(requests), 0) FROM usage_hourly),
       (SELECT count(*) FROM usage_events),
       (SELECT coalesce(sum(items), 0) FROM usage_hourly),
       (SELECT coalesce(sum(items), 0) FROM usage_events),
       (SELECT coalesce(sum(compute_us), 0) FROM usage_hourly),
       (SELECT coalesce(sum(compute_us), 0) FROM usage_events),
       (SELECT coalesce(sum(errors), 0) FROM usage_hourly),
       (SELECT count(*) FROM usage_events WHERE status_code >= 400)
"""


def _sync(url: str, *, autocommit: bool = False) -> Connection:
    """Autocommit where the test calls the maintenance in between: a read left open in a
    transaction would hold a lock that partition DDL waits for."""
    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
    )
    return engine.connect()


def _seed(conn: Connection, n: int) -> None:
    """``n`` rows over 15 months (2025-01 .. 2026-03), two customers, every shape of row:
    NULL model and variant, errors, non-billable."""
    conn.execute(text("INSERT INTO customers (id, name, status, created_at) VALUES "
                      "(1, 'a', 'active', now()), (2, 'b', 'active', now())"))  # fmt: skip
    for key_id, customer_id in ((1, 1), (2, 2)):
        conn.execute(
            text(
                "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, "
                "created_at) VALUES (:id, :c, :p, 'abcd', :h, '[\"predict\"]', now())"
            ),
            {"id": key_id, "c": customer_id, "p": f"tg_key{key_id:05d}", "h": f"{key_id:064d}"},
        )
    conn.execute(
        text(
            "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, model, "
            "version, variant, device, items, compute_us, latency_us, status_code, billable, "
            "created_at) "
            "SELECT 'r-' || g, 1 + g % 2, 1 + g % 2, 'v1.predict', "
            "CASE WHEN g % 11 = 0 THEN NULL ELSE 'cnn' END, '1', "
            "CASE WHEN g % 3 = 0 THEN 'int8' END, 'cpu', 1 + g % 4, 1000 + g, 2000 + g, "
            "CASE WHEN g % 7 = 0 THEN 422 ELSE 200 END, g % 7 <> 0, "
            "timestamptz '2025-01-01 00:00:00+00' + (g * interval '1 hour' * 10950 / :n) "
            "FROM generate_series(1, :n) g"
        ),
        {"n": n},
    )
    conn.commit()


def test_migration_converts_a_populated_ledger_exactly(scratch_pg: str) -> None:
    run_migrations(scratch_pg, BEFORE)
    conn = _sync(scratch_pg)
    _seed(conn, 20_000)
    before = conn.execute(text(_SUMS)).one()
    by_month = conn.execute(text(_BY_MONTH)).all()
    conn.close()

    run_migrations(scratch_pg)
    conn = _sync(scratch_pg)
    assert conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'usage_events'")) == "p"
    assert conn.execute(text(_SUMS)).one() == before
    assert conn.execute(text(_BY_MONTH)).all() == by_month
    # Each month's rows sit in that month's partition; the DEFAULT partition holds none.
    for month, count in by_month:
        assert conn.scalar(text(f"SELECT count(*) FROM usage_events_p{month}")) == count  # noqa: S608
    assert conn.scalar(text("SELECT count(*) FROM usage_events_default")) == 0
    # The rollups built by the migration equal the raw sums.
    sums = conn.execute(text(_ROLLUP_VS_RAW)).one()
    assert sums[0::2] == sums[1::2]
    # New ids continue the old sequence; the same request id at the same time is one row.
    row = (
        "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, items, "
        "compute_us, latency_us, status_code, billable, created_at) VALUES ('r-1', 1, 1, 'x', "
        "1, 1, 1, 200, true, (SELECT created_at FROM usage_events WHERE request_id = 'r-1')) "
        "ON CONFLICT (request_id, created_at) DO NOTHING RETURNING id"
    )
    assert conn.execute(text(row)).all() == []  # r-1's own row: already there
    new_id = conn.execute(text(row.replace("VALUES ('r-1'", "VALUES ('r-new'"))).scalar_one()
    assert new_id > before[-1]
    conn.rollback()
    conn.close()

    command.check(alembic_config(scratch_pg))  # partitions are not drift
    command.downgrade(alembic_config(scratch_pg), BEFORE)
    conn = _sync(scratch_pg)
    assert conn.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'usage_events'")) == "r"
    assert conn.execute(text(_SUMS)).one() == before
    conn.close()


async def _partitions(url: str, work: object) -> object:
    engine = build_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            return await work(conn)  # type: ignore[operator]
    finally:
        await engine.dispose()


def _month(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def test_months_ahead_move_strays_from_default_and_old_months_detach(scratch_pg: str) -> None:
    run_migrations(scratch_pg, BEFORE)
    conn = _sync(scratch_pg)
    _seed(conn, 500)  # 2025-01 .. 2026-03
    conn.close()
    run_migrations(scratch_pg)
    conn = _sync(scratch_pg, autocommit=True)
    # A month without a partition (the job was down): the row still lands, in DEFAULT.
    conn.execute(text(
        "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, items, "
        "compute_us, latency_us, status_code, billable, created_at) VALUES "
        "('stray', 1, 1, 'x', 1, 1, 1, 200, true, '2031-06-15 12:00:00+00')"
    ))  # fmt: skip
    conn.commit()
    total = conn.scalar(text("SELECT count(*) FROM usage_events"))
    assert conn.scalar(text("SELECT count(*) FROM usage_events_default")) == 1

    created = asyncio.run(
        _partitions(scratch_pg, lambda c: partitions.ensure_partitions(c, _month(2031, 5), 2))
    )
    assert created == ["usage_events_p2031_05", "usage_events_p2031_06", "usage_events_p2031_07"]
    assert conn.scalar(text("SELECT count(*) FROM usage_events_default")) == 0
    assert conn.scalar(text("SELECT request_id FROM usage_events_p2031_06")) == "stray"
    assert conn.scalar(text("SELECT count(*) FROM usage_events")) == total
    again = asyncio.run(
        _partitions(scratch_pg, lambda c: partitions.ensure_partitions(c, _month(2031, 5), 2))
    )
    assert again == []

    # Retention: keep two full months before 2025-06, so 2025-01..2025-03 detach.
    cutoff = partitions.retention_cutoff(datetime(2025, 6, 20, tzinfo=UTC), 2)
    assert cutoff == _month(2025, 4)
    early = conn.scalar(
        text("SELECT count(*) FROM usage_events WHERE created_at < :c"), {"c": cutoff}
    )
    assert early
    conn.commit()
    detached = asyncio.run(_partitions(scratch_pg, lambda c: partitions.detach_before(c, cutoff)))
    assert detached == ["usage_events_p2025_01", "usage_events_p2025_02", "usage_events_p2025_03"]
    assert conn.scalar(text("SELECT count(*) FROM usage_events")) == total - early
    archived = sum(
        conn.scalar(text(f"SELECT count(*) FROM {name}"))  # noqa: S608
        for name in detached
    )
    assert archived == early  # detached, not dropped: each month is a plain table to archive
    conn.close()


def test_cli_lists_creates_and_detaches(scratch_pg: str) -> None:
    run_migrations(scratch_pg)
    env = {
        **os.environ,
        "TOLLGATE_DATABASE_URL": scratch_pg,
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
    }
    cli = [sys.executable, "-m", "app.cli", "ledger", "partitions"]
    listed = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    now = partitions.month_start(datetime.now(UTC))
    assert partitions.partition_name(now) in listed.stdout
    detach = [*cli, "--detach-before", f"{partitions.add_months(now, 1):%Y-%m}"]
    out = subprocess.run(detach, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert partitions.partition_name(now) in out.stdout.split('"attached"')[0]  # detached
    assert partitions.partition_name(now) not in out.stdout.split('"attached"')[1]
    bad = subprocess.run(
        [*cli, "--detach-before", "June"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
