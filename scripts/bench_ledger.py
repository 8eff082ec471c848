"""Issue 17: the ledger at scale (Postgres). ``python -m scripts.bench_ledger --rows N``.

Builds a fresh database by migrations, 1,000 customers (one key each) on the bench_close mix
of plans, creates the month's partition, generates N usage rows over that month server-side
(generate_series into the month's partition as a plain table, then ATTACH: the indexes are
built once, in bulk, instead of row by row), builds the hourly rollups with one
INSERT ... SELECT, then times, through the real service functions, in-process:

- close the month (``close_period``: every customer's invoice),
- preview one customer's invoice for the month (``billing.service.preview``), 50 runs over
  50 customers, p50/p99,
- ``/v1/usage`` for a month (``metering.service.usage_report``, by day and by model), 50
  runs, p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import psycopg

from app.billing.parties import seller_snapshot
from app.billing.service import close_period, preview
from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.metering import partitions
from app.metering.rollups import FILL_FROM_LEDGER_SQL
from app.metering.schemas import GroupBy
from app.metering.service import usage_report
from app.money.periods import Period
from app.plans import service as plans
from app.plans.schemas import Effective, PlanAssign
from scripts.bench_close import PLANS
from tests.conftest import run_migrations

PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")
DB = os.environ.get("TOLLGATE_BENCH_DB", "tollgate_bench_ledger")
PERIOD = Period(2026, 9)
RUNS = 50


def _generate(url: str, customers: int, rows: int) -> dict[str, float]:
    took = {}
    part = partitions.partition_name(PERIOD.start)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET maintenance_work_mem = '512MB'")  # this session's index builds only
        c.execute(
            "INSERT INTO customers (name, status, created_at) "
            "SELECT 'c' || g, 'active', now() FROM generate_series(1, %s) g",
            (customers,),
        )
        c.execute(
            "INSERT INTO api_keys (customer_id, prefix, last_four, hash, scopes, created_at) "
            "SELECT id, 'tg_' || lpad(id::text, 8, '0'), '0000', md5(id::text) || md5(id::text), "
            "'[\"predict\"]', now() FROM customers"
        )
        t = time.perf_counter()
        c.execute(f"CREATE TABLE {part} (LIKE usage_events INCLUDING DEFAULTS)")
        c.execute(
            f"INSERT INTO {part} (request_id, api_key_id, customer_id, endpoint, model, "  # noqa: S608
            "version, variant, device, items, compute_us, latency_us, status_code, billable, "
            "created_at) "
            "SELECT 'r' || g, 1 + g %% %(c)s, 1 + g %% %(c)s, 'v1.predict', "
            "CASE WHEN j %% 3 = 0 THEN 'linreg' ELSE 'cnn' END, '1', "
            "CASE WHEN j %% 5 = 0 THEN 'int8' END, 'cpu', 1 + j %% 4, "
            "500 + j %% 1000, 900 + j %% 1000, CASE WHEN j %% 50 = 0 THEN 422 ELSE 200 END, "
            "j %% 50 <> 0, %(start)s::timestamptz + (g::bigint * 2592000 / %(n)s) "
            "* interval '1 second' "
            # g picks the customer; j, the customer's own sequence, picks the rest, so every
            # customer gets every model, variant and status.
            "FROM generate_series(0, %(n)s - 1) g, LATERAL (SELECT g / %(c)s AS j) s",
            {"c": customers, "n": rows, "start": PERIOD.start},
        )
        took["insert"] = time.perf_counter() - t
        t = time.perf_counter()
        c.execute(
            f"ALTER TABLE usage_events ATTACH PARTITION {part} FOR VALUES FROM "
            f"('{PERIOD.start:%Y-%m-%d} 00:00:00+00') TO ('{PERIOD.end:%Y-%m-%d} 00:00:00+00')"
        )
        took["attach (indexes)"] = time.perf_counter() - t
        t = time.perf_counter()
        c.execute(FILL_FROM_LEDGER_SQL)
        took["rollups"] = time.perf_counter() - t
        c.execute("VACUUM ANALYZE")
        took["rollup rows"] = c.execute("SELECT count(*) FROM usage_hourly").fetchone()[0]  # type: ignore[index]
    return took


async def _assign(url: str, customers: int) -> None:
    engine = build_engine(url)
    async with build_sessionmaker(engine)() as session, session.begin():
        ids = []
        for plan in PLANS:
            created, _ = await plans.create_plan(session, "bench", plan)
            ids.append(created.id)
        for customer in range(1, customers + 1):
            await plans.assign_plan(
                session,
                "bench",
                customer,
                PlanAssign(plan_id=ids[customer % len(ids)], effective=Effective.immediately),
                now=PERIOD.start - timedelta(days=30),
            )
    await engine.dispose()


async def _measure(url: str, customers: int) -> dict[str, object]:
    engine = build_engine(url)
    sessions = build_sessionmaker(engine)
    seller = seller_snapshot(Settings())
    now = PERIOD.end + timedelta(days=3)
    out: dict[str, object] = {}

    async def timed(work: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
        times = []
        for run in range(RUNS):
            customer = 1 + (run * 37) % customers
            t = time.perf_counter()
            await work(customer)
            times.append(time.perf_counter() - t)
        times.sort()
        return statistics.median(times) * 1000, times[
            min(len(times) - 1, int(0.99 * len(times)))
        ] * 1000

    async def preview_one(customer: int) -> None:
        async with sessions() as session:
            draft = await preview(session, customer, PERIOD, seller=seller, now=now)
            assert draft.rated.lines

    async def usage(group_by: GroupBy) -> Callable[[int], Awaitable[None]]:
        async def one(customer: int) -> None:
            async with sessions() as session:
                report = await usage_report(
                    session, customer, PERIOD.start, PERIOD.end, group_by, now=now
                )
                assert report.total.requests

        return one

    await timed(preview_one)  # warm the pool and the caches once
    out["preview p50/p99 ms"] = await timed(preview_one)
    out["usage by day p50/p99 ms"] = await timed(await usage(GroupBy.day))
    out["usage by model p50/p99 ms"] = await timed(await usage(GroupBy.model))
    # The close writes every invoice (flushed), then rolls back: the database is left as
    # generated, so a run with --reuse measures the same close again.
    async with sessions() as session:
        t = time.perf_counter()
        async with session.begin():
            result = await close_period(
                session, "bench", PERIOD, grace=timedelta(0), seller=seller, now=datetime.now(UTC)
            )
            await session.flush()
            out["close s"] = time.perf_counter() - t
            out["invoices"] = len(result.created)
            await session.rollback()
    await engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure again on the database a previous run kept (TOLLGATE_BENCH_KEEP=1)",
    )
    args = parser.parse_args()
    url = f"postgresql://{PG}/{DB}"
    if args.reuse:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]  # type: ignore[index]
        print(f"rows={rows:,} customers={args.customers} (reused)")
    else:
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DB}"')
        run_migrations(url)
        t0 = time.perf_counter()
        setup = _generate(url, args.customers, args.rows)
        asyncio.run(_assign(url, args.customers))
        took = time.perf_counter() - t0
        print(f"rows={args.rows:,} customers={args.customers} setup {took:.0f} s")
        for k, v in setup.items():
            print(f"  {k}: {v:,.1f}" if isinstance(v, float) else f"  {k}: {v:,}")
    for k, v in asyncio.run(_measure(url, args.customers)).items():
        shown = (
            f"{v[0]:.1f} / {v[1]:.1f}"
            if isinstance(v, tuple)
            else (f"{v:.2f}" if isinstance(v, float) else str(v))
        )
        print(f"  {k}: {shown}")
    if os.environ.get("TOLLGATE_BENCH_KEEP") != "1":
        with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


if __name__ == "__main__":
    main()
