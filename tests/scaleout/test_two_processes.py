"""Two real service processes (uvicorn) sharing one Postgres and one Redis: the rate limit
holds for the sum, every request has exactly one ledger row, and a revocation is effective
on both within the key cache TTL."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from app.auth.secrets import generate_key, hash_key, public_prefix
from app.billing.rating import RatedInvoice, rate_customer
from app.db.engine import build_engine, build_sessionmaker
from app.money.periods import Period
from app.money.pricing import PriceComponent
from app.orm.base import utcnow
from tests.conftest import TEST_SECRET
from tests.limits.test_limits_api import REDIS

ROW = {"inputs": [0.2] * 10}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


@pytest.fixture
def servers(pg_url: str, pg_sync: object) -> Iterator[list[str]]:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS}: {exc}")
    env = {
        **os.environ,
        "TOLLGATE_ENV": "test",
        "TOLLGATE_SECRET_KEY": TEST_SECRET,
        "TOLLGATE_DATABASE_URL": pg_url,
        "TOLLGATE_REDIS_URL": REDIS,
        "TOLLGATE_REDIS_PREFIX": f"tollgate-test:{uuid.uuid4().hex}:",
        "TOLLGATE_DEVICE": "cpu",
        "TOLLGATE_LOG_LEVEL": "WARNING",
    }
    procs, urls = [], []
    try:
        for _ in range(2):
            port = _free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs, strict=True):
            _wait_ready(url, proc)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def _make_key(engine: object, name: str, rpm: int | None = None) -> tuple[int, str]:
    secret = generate_key()
    with engine.begin() as conn:  # type: ignore[attr-defined]
        customer_id = conn.execute(
            text(
                "INSERT INTO customers (name, status, created_at) "
                "VALUES (:n, 'active', now()) RETURNING id"
            ),
            {"n": name},
        ).scalar()
        key_id = conn.execute(
            text(
                "INSERT INTO api_keys (customer_id, prefix, last_four, hash, scopes, "
                "requests_per_minute, created_at) VALUES (:c, :p, :l, :h, '[\"predict\"]', "
                ":rpm, now()) RETURNING id"
            ),
            {
                "c": customer_id,
                "p": public_prefix(secret),
                "l": secret[-4:],
                "h": hash_key(TEST_SECRET, secret),
                "rpm": rpm,
            },
        ).scalar()
    return int(key_id), secret


def _put_on_plan(engine: object, customer: str, unit_price: str) -> int:
    component = PriceComponent.from_dict(
        {"unit": "request", "pricing": "per_unit", "unit_price": unit_price}
    )
    with engine.begin() as conn:  # type: ignore[attr-defined]
        customer_id = conn.execute(
            text("SELECT id FROM customers WHERE name = :n"), {"n": customer}
        ).scalar()
        plan_id = conn.execute(
            text("INSERT INTO plans (name, created_at) VALUES (:n, now()) RETURNING id"),
            {"n": f"plan-{customer}"},
        ).scalar()
        version_id = conn.execute(
            text(
                "INSERT INTO plan_versions (plan_id, version, currency, base_fee, components, "
                "created_at) VALUES (:p, 1, 'usd', 0, :c, now()) RETURNING id"
            ),
            {"p": plan_id, "c": json.dumps([component.to_dict()])},
        ).scalar()
        conn.execute(
            text(
                "INSERT INTO customer_plans (customer_id, plan_version_id, "
                "effective_from, created_at) VALUES (:c, :v, now() - interval "
                "'1 second', now())"
            ),
            {"c": customer_id, "v": version_id},
        )
    return int(customer_id)


async def _preview(pg_url: str, customer_id: int) -> RatedInvoice:
    engine = build_engine(pg_url)
    try:
        async with build_sessionmaker(engine)() as session:
            rated = await rate_customer(session, customer_id, Period.containing(utcnow()))
    finally:
        await engine.dispose()
    assert rated is not None
    return rated


async def test_two_processes_share_limits_ledger_and_revocation(
    servers: list[str], pg_sync: object, pg_url: str
) -> None:
    _, limited = _make_key(pg_sync, "shared", rpm=20)
    customer_id = _put_on_plan(pg_sync, "shared", unit_price="1")
    revocable_id, revocable = _make_key(pg_sync, "revocable")

    async with httpx.AsyncClient(timeout=30) as client:

        async def call(url: str, secret: str) -> httpx.Response:
            return await client.post(
                f"{url}/v1/models/linreg/predict",
                json=ROW,
                headers={"Authorization": f"Bearer {secret}"},
            )

        responses = await asyncio.gather(*(call(u, limited) for u in servers for _ in range(15)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 20 + [429] * 10

        for url in servers:
            assert (await call(url, revocable)).status_code == 200
        with pg_sync.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(
                text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": revocable_id}
            )
        await asyncio.sleep(1.1)
        for url in servers:
            revoked = await call(url, revocable)
            assert revoked.status_code == 401
            assert revoked.json()["error"]["type"] == "key_revoked"

    ids = [r.headers["x-request-id"] for r in responses]
    with pg_sync.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            text(
                "SELECT request_id, status_code, billable FROM usage_events "
                "WHERE request_id = ANY(:ids)"
            ),
            {"ids": ids},
        ).all()
        total = conn.execute(
            text("SELECT count(*), count(DISTINCT request_id) FROM usage_events")
        ).one()
    assert len(rows) == len(ids) == 30
    assert sorted((r.status_code, r.billable) for r in rows) == sorted(
        [(200, True)] * 20 + [(429, False)] * 10
    )
    # 30 + the two 200s of the revocable key; its 401s are not metered (no valid key).
    assert total[0] == total[1] == 32
    # The invoice reflects exactly the 20 requests served across both processes.
    invoice = await _preview(pg_url, customer_id)
    assert invoice.subtotal_minor == 20 * 100
