"""Console page render times at scale (part of ``make bench``).

Builds a fresh Postgres database by migrations with 10,000 customers, one key each, and
1,000,000 usage rows over the last 30 days (generated server-side), plus a plan for every
customer and a closed month of invoices; then, in-process (httpx over ASGI, no network),
signs in to the console as an admin+finance key and as a customer's billing key and GETs
each page many times. Reports p50 and p95 server-side render time per page; the target is
p95 < 100 ms (issue 15).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from app.billing.parties import seller_snapshot
from app.billing.service import close_period
from app.config import Settings
from app.db.engine import build_engine, build_sessionmaker
from app.keys.schemas import Scope
from app.keys.service import create_key
from app.main import create_app
from app.metering.rollups import FILL_FROM_LEDGER_SQL
from app.money.periods import Period
from app.plans import service as plans
from app.plans.schemas import ComponentIn, Effective, PlanAssign, PlanCreate
from tests.conftest import run_migrations

PG = os.environ.get("TOLLGATE_BENCH_PG", "postgres@127.0.0.1:5432")
DB = "tollgate_bench_console"
SECRET = "bench-console-secret-0123456789"  # noqa: S105 - a throwaway database
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def setup(url: str, customers: int, rows: int, now: datetime) -> tuple[str, str]:
    start = now - timedelta(days=30)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            "INSERT INTO customers (name, status, created_at, is_operator, tax_exempt) "
            "SELECT 'c' || lpad(g::text, 5, '0'), 'active', now(), false, false "
            "FROM generate_series(1, %s) g",
            (customers,),
        )
        c.execute(
            "INSERT INTO api_keys (customer_id, prefix, last_four, hash, scopes, created_at, "
            "legacy_staff) SELECT id, 'tg_' || lpad(id::text, 8, '0'), '0000', "
            "md5(id::text) || md5(id::text), '[\"predict\"]', now(), false FROM customers"
        )
        c.execute(
            "INSERT INTO usage_events (request_id, api_key_id, customer_id, endpoint, model, "
            "version, device, items, compute_us, latency_us, status_code, billable, created_at) "
            "SELECT 'r' || g, k.id, k.customer_id, 'v1.predict', "
            "CASE WHEN g %% 3 = 0 THEN 'linreg' ELSE 'cnn' END, '1', 'cpu', 1 + g %% 4, "
            "500 + g %% 1000, 900 + g %% 1000, CASE WHEN g %% 50 = 0 THEN 422 ELSE 200 END, "
            "g %% 50 <> 0, %s::timestamptz + (g %% 2592000) * interval '1 second' "
            "FROM generate_series(1, %s) g JOIN api_keys k ON k.id = 1 + g %% %s",
            (start, rows, customers),
        )
        c.execute(FILL_FROM_LEDGER_SQL)  # the hourly rollups billing reads (issue 17)
        c.execute("ANALYZE")
    engine = build_engine(url)
    async with build_sessionmaker(engine)() as session, session.begin():
        plan, _ = await plans.create_plan(
            session,
            "bench",
            PlanCreate(
                name="standard",
                currency="usd",
                base_fee="10",
                components=[ComponentIn(unit="request", pricing="per_unit", unit_price="0.0004")],
            ),
        )
        for customer in range(1, customers + 1):
            await plans.assign_plan(
                session,
                "bench",
                customer,
                PlanAssign(plan_id=plan.id, effective=Effective.immediately),
                now=start - timedelta(days=40),
            )
        previous = Period.containing(start - timedelta(days=1))
        await close_period(
            session,
            "bench",
            previous,
            grace=timedelta(0),
            seller=seller_snapshot(Settings()),
            now=now,
        )
        staff = await create_key(
            session, SECRET, customer_name="operator", scopes=(Scope.admin, Scope.finance)
        )
        customer_key = await create_key(
            session, SECRET, customer_name="c00042", scopes=(Scope.billing,)
        )
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("UPDATE customers SET is_operator = true WHERE name = 'operator'")
    await engine.dispose()
    return staff.secret, customer_key.secret


async def sign_in(client: httpx.AsyncClient, secret: str) -> None:
    form = await client.get("/console/login")
    match = CSRF.search(form.text)
    assert match
    done = await client.post(
        "/console/login", data={"api_key": secret, "csrf_token": match.group(1)}
    )
    assert done.status_code == 303, done.text


async def measure(client: httpx.AsyncClient, path: str, n: int) -> tuple[int, list[float]]:
    times = []
    status = 0
    for _ in range(n):
        t0 = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        status = response.status_code
    return status, times


STAFF_PAGES = [
    "/console/",
    "/console/customers",
    "/console/customers?q=c0999",
    "/console/customers?page=150",
    "/console/customers/5000",
    "/console/keys",
    "/console/plans",
    "/console/models",
    "/console/audit",
    "/console/billing",
    "/console/reports",
]
CUSTOMER_PAGES = ["/console/me", "/console/me/invoices", "/console/me/keys"]


async def run(url: str, staff: str, customer: str, n: int) -> None:
    settings = Settings(
        database_url=url.replace("postgresql://", "postgresql+asyncpg://"),
        secret_key=SECRET,
        device="cpu",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for secret, pages in ((staff, STAFF_PAGES), (customer, CUSTOMER_PAGES)):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                await sign_in(client, secret)
                for path in pages:
                    await measure(client, path, 2)  # warm
                    status, times = await measure(client, path, n)
                    times.sort()
                    p95 = times[int(0.95 * (len(times) - 1))]
                    verdict = "ok" if p95 < 100 else "OVER"
                    if status != 200:
                        verdict = f"not a page ({status})"
                    print(
                        f"| `{path}` | {status} | {statistics.median(times):.1f} | "
                        f"{p95:.1f} | {verdict} |"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("-n", type=int, default=40, help="requests per page")
    parser.add_argument("--reuse", action="store_true", help="keep the database of a last run")
    args = parser.parse_args()
    url = f"postgresql://{PG}/{DB}"
    now = datetime.now(UTC)
    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB}"')
    run_migrations(url)
    t0 = time.perf_counter()
    staff, customer = asyncio.run(setup(url, args.customers, args.rows, now))
    print(
        f"generated {args.customers:,} customers and {args.rows:,} usage rows "
        f"in {time.perf_counter() - t0:.1f} s; {args.n} GETs per page, in-process"
    )
    print("| page | status | p50 ms | p95 ms | p95 < 100 ms |\n|---|---|---|---|---|")
    asyncio.run(run(url, staff, customer, args.n))


if __name__ == "__main__":
    main()
