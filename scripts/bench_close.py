"""Closing a period over many usage rows on Postgres (part of ``make bench``).

Builds a fresh database by migrations, puts N customers on a mix of plans (per-unit,
graduated, volume, package, compute-second; one mid-period plan change each for a tenth of
them), generates the usage rows server-side with generate_series spread over one month, then
times ``close_period`` through the service, in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

import psycopg

from app.billing.parties import seller_snapshot
from app.billing.service import close_period
from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.metering.rollups import FILL_FROM_LEDGER_SQL
from app.money.periods import Period
from app.plans import service as plans
from app.plans.schemas import ComponentIn, Effective, PlanAssign, PlanCreate, TierIn
from tests.conftest import run_migrations

PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")
DB = "tollgate_bench_close"
PERIOD = Period(2026, 9)

TIERS = [TierIn(up_to=5000, unit_price="0.002"), TierIn(up_to=None, unit_price="0.001")]
PLANS = [
    PlanCreate(
        name="per-unit",
        currency="usd",
        base_fee="10",
        components=[ComponentIn(unit="request", pricing="per_unit", unit_price="0.0004")],
    ),
    PlanCreate(
        name="graduated",
        currency="usd",
        components=[
            ComponentIn(unit="item", pricing="graduated", tiers=TIERS, model="cnn"),
            ComponentIn(unit="item", pricing="volume", tiers=TIERS, model="linreg"),
        ],
    ),
    PlanCreate(
        name="package",
        currency="usd",
        base_fee="5",
        components=[
            ComponentIn(
                unit="request", pricing="package", unit_price="1.5", package_size=1000, included=500
            )
        ],
    ),
    PlanCreate(
        name="compute",
        currency="usd",
        components=[ComponentIn(unit="compute_second", pricing="per_unit", unit_price="0.01")],
    ),
]


async def setup(url: str, customers: int, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
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
        c.execute(
            "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, model, "
            "version, device, items, compute_us, latency_us, status_code, billable, created_at) "
            "SELECT 'r' || g, k.id, k.customer_id, 'v1.predict', "
            "CASE WHEN g %% 3 = 0 THEN 'linreg' ELSE 'cnn' END, '1', 'cpu', 1 + g %% 4, "
            "500 + g %% 1000, 900 + g %% 1000, CASE WHEN g %% 50 = 0 THEN 422 ELSE 200 END, "
            "g %% 50 <> 0, %s::timestamptz + (g %% 2592000) * interval '1 second' "
            "FROM generate_series(1, %s) g JOIN api_keys k ON k.id = 1 + g %% %s",
            (PERIOD.start, rows, customers),
        )
        c.execute(FILL_FROM_LEDGER_SQL)  # the hourly rollups billing reads (issue 17)
        c.execute("ANALYZE")
    engine = build_engine(url)
    async with build_sessionmaker(engine)() as session, session.begin():
        ids = []
        for plan in PLANS:
            created, _ = await plans.create_plan(session, "bench", plan)
            ids.append(created.id)
        before = PERIOD.start - timedelta(days=30)
        for customer in range(1, customers + 1):
            await plans.assign_plan(
                session,
                "bench",
                customer,
                PlanAssign(plan_id=ids[customer % len(ids)], effective=Effective.immediately),
                now=before,
            )
            if customer % 10 == 0:  # mid-period change, same currency
                await plans.assign_plan(
                    session,
                    "bench",
                    customer,
                    PlanAssign(
                        plan_id=ids[(customer + 1) % len(ids)], effective=Effective.immediately
                    ),
                    now=PERIOD.start + timedelta(days=14, hours=7),
                )
    await engine.dispose()


async def timed_close(url: str) -> tuple[float, int]:
    engine = build_engine(url)
    started = time.perf_counter()
    async with build_sessionmaker(engine)() as session, session.begin():
        result = await close_period(
            session,
            "bench",
            PERIOD,
            grace=timedelta(0),
            seller=seller_snapshot(Settings()),
            now=datetime.now(UTC),
        )
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return elapsed, len(result.created)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()
    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    url = f"postgresql://{PG}/{DB}"
    run_migrations(url)
    t0 = time.perf_counter()
    asyncio.run(setup(url, args.customers, args.rows))
    print(
        f"generated {args.rows:,} usage rows for {args.customers} customers "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    elapsed, invoices = asyncio.run(timed_close(url))
    print(
        f"close {PERIOD}: {invoices} invoices over {args.rows:,} rows in {elapsed:.2f} s "
        "(target <= 20 s)"
    )
    again, created = asyncio.run(timed_close(url))
    print(f"close again: {created} new invoices in {again:.2f} s")


if __name__ == "__main__":
    main()
