"""Issue 17: hourly rollups are exact. Whatever the writers do (lanes and processes racing on
the same rows and the same rollup keys, a batch retried, a writer killed with -9 in the
middle of a stream), every rollup equals the raw sum of the ledger rows it covers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.db.engine import build_engine
from app.metering.writer import MeterWriter
from app.observability.metrics import Metrics
from tests.metering.ledger_writer_proc import CUSTOMERS, row
from tests.paths import REPO_ROOT

# Raw sums and rollup sums per rollup key; the two must be the same set of rows.
_RAW = text("""
SELECT customer_id, date_trunc('hour', created_at, 'UTC') AS hour, api_key_id,
       coalesce(model, ''), coalesce(version, ''), coalesce(variant, ''), billable,
       count(*), count(*) FILTER (WHERE status_code >= 400), sum(items), sum(compute_us)
FROM usage_events GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
""")
_ROLLUP = text("""
SELECT customer_id, hour, api_key_id, model, version, variant, billable,
       requests, errors, items, compute_us
FROM usage_hourly ORDER BY 1, 2, 3, 4, 5, 6, 7
""")


def _seed_customers(engine: Engine) -> None:
    with engine.begin() as conn:
        for c in range(1, CUSTOMERS + 1):
            conn.execute(
                text("INSERT INTO customers (id, name, status, created_at) "
                     "VALUES (:c, :n, 'active', now())"),
                {"c": c, "n": f"drill-{c}"},
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, customer_id, prefix, last_four, hash, scopes, "
                    "created_at) VALUES (:c, :c, :p, 'abcd', :h, '[\"predict\"]', now())"
                ),
                {"c": c, "p": f"tg_drill{c:04d}", "h": f"{c:064d}"},
            )


def _assert_exact(engine: Engine, n: int) -> None:
    with engine.connect() as conn:
        raw = [tuple(r) for r in conn.execute(_RAW)]
        rollup = [tuple(r) for r in conn.execute(_ROLLUP)]
        rows = conn.scalar(text("SELECT count(*) FROM usage_events"))
        distinct = conn.scalar(text("SELECT count(DISTINCT request_id) FROM usage_events"))
    assert rows == distinct == n  # every row once
    assert len(raw) > 10  # several keys, hours and a month boundary
    assert rollup == raw


@pytest.fixture
def drill_db(pg_sync: Engine) -> Engine:
    _seed_customers(pg_sync)
    return pg_sync


async def test_concurrent_lanes_and_retried_batches_count_each_row_once(
    settings: Settings, drill_db: Engine
) -> None:
    n = 3000
    engine = build_engine(settings.database_url, pool_size=8)
    writers = [MeterWriter(engine, Metrics(), max_batch=32, lanes=4) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        # Three writers (4 lanes each) write overlapping shares of the same rows at once:
        # each row is offered up to three times, by different connections, concurrently.
        shares = [range(0, n, 1), range(0, n, 2), range(n - 1, -1, -3)]
        await asyncio.gather(
            *(w.record(row(i)) for w, share in zip(writers, shares, strict=True) for i in share)
        )
        # A retry re-sends identical rows: nothing is written or counted again.
        await asyncio.gather(*(writers[0].record(replace(row(i))) for i in range(0, n, 5)))
    finally:
        for w in writers:
            await w.stop()
        await engine.dispose()
    _assert_exact(drill_db, n)


def test_kill_9_of_a_writer_mid_stream_leaves_rollups_exact(
    settings: Settings, drill_db: Engine
) -> None:
    """Two writer processes race over the same rows in opposite orders; one is killed with
    SIGKILL mid-stream (its in-flight batches die with it); the other finishes. Then
    the ledger has every row once and every rollup equals its raw sum."""
    n = 6000
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def writer(order: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "tests.metering.ledger_writer_proc"]
        return subprocess.Popen(
            [*cmd, settings.database_url, str(n), order],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )

    victim, survivor = writer("up"), writer("down")
    try:
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "committed"
        # Let it stream a little further, then kill it while its lanes are committing.
        deadline = time.monotonic() + 30
        with drill_db.connect() as conn:
            while conn.scalar(text("SELECT count(*) FROM usage_events")) < n // 4:
                assert time.monotonic() < deadline, "the writers made no progress"
                conn.rollback()
                time.sleep(0.02)  # polling the database, not timing the code under test
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        out, _ = survivor.communicate(timeout=300)
        assert survivor.returncode == 0 and "done" in out
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _assert_exact(drill_db, n)
