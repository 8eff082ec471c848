"""Rate limits and spend caps as a caller meets them: headers, 429/402, Redis sharing,
Redis down, and what the ledger records."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from app.config import Settings
from app.inference.predictor import LoadedModules
from app.keys.schemas import CreatedKey, PlanSnapshot, Scope
from app.limits.policy import MAX_PER_MINUTE
from app.limits.quota import usage_spend
from app.main import create_app
from app.money.pricing import PriceComponent
from app.orm import PlanVersion
from app.resources import resources
from tests.billing.helpers import add_usage, assign, create_plan
from tests.conftest import bearer, ledger, make_key

ROW = [0.1] * 10
REDIS = os.environ.get("TOLLGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def _set_key_limits(app: FastAPI, key: CreatedKey, rpm: int | None, ipm: int | None) -> None:
    async with resources(app).sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "UPDATE api_keys SET requests_per_minute = :r, items_per_minute = :i WHERE id = :id"
            ),
            {"r": rpm, "i": ipm, "id": key.key_id},
        )
    resources(app).authenticator.forget_all()


async def _predict(client: httpx.AsyncClient, key: CreatedKey, n: int = 1) -> httpx.Response:
    inputs = ROW if n == 1 else [ROW] * n
    return await client.post(
        "/v1/models/linreg/predict", json={"inputs": inputs}, headers=bearer(key)
    )


async def test_requests_per_minute_exact_at_the_boundary(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    await _set_key_limits(app, key, 5, None)
    responses = [await _predict(client, key) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses[:5]] == [
        "4",
        "3",
        "2",
        "1",
        "0",
    ]
    assert all(r.headers["x-ratelimit-limit-requests"] == "5" for r in responses)
    limited = responses[5]
    assert limited.json()["error"]["type"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after"]) >= 1
    assert float(limited.headers["x-ratelimit-reset-requests"].rstrip("s")) > 0
    rows = await ledger(app)
    assert [(r.status_code, r.billable) for r in rows] == [(200, True)] * 5 + [(429, False)]


async def test_items_per_minute_and_oversized_batches(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    await _set_key_limits(app, key, None, 10)
    first, second, third = [await _predict(client, key, 4) for _ in range(3)]
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert second.headers["x-ratelimit-remaining-items"] == "2"
    assert (await _predict(client, key, 2)).status_code == 200  # the 2 left still fit
    never = await _predict(client, key, 11)
    assert never.status_code == 413
    assert never.json()["error"]["type"] == "batch_exceeds_rate_limit"


async def test_plan_limits_apply_and_key_overrides_win(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    plan = await create_plan(
        client, admin, name="slow", currency="usd", requests_per_minute=2, components=[]
    )
    on_plan = await make_key(app, "slowpoke")
    await assign(app, on_plan.customer_id, plan["id"], datetime.now(UTC), immediately=True)
    resources(app).authenticator.forget_all()
    statuses = [(await _predict(client, on_plan)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    override = await make_key(app, "slowpoke")
    await _set_key_limits(app, override, 4, None)
    statuses = [(await _predict(client, override)).status_code for _ in range(5)]
    assert statuses == [200] * 4 + [429]


async def test_a_stored_limit_above_the_limiters_range_is_served_as_its_maximum(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A per-minute limit written before the API bounded it (up to the INTEGER column) must
    not turn every predict into a 500."""
    key = await make_key(app)
    await _set_key_limits(app, key, 2**31 - 1, 2**31 - 1)
    response = await _predict(client, key)
    assert response.status_code == 200, response.text
    assert response.headers["x-ratelimit-limit-requests"] == str(MAX_PER_MINUTE)


@pytest.fixture
def redis_settings(settings: Settings) -> Settings:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS}: {exc}")
    # A generous Redis timeout: these tests are about sharing, and a loaded CI machine can stall
    # a 16-request burst past the 250 ms default, which (correctly) degrades to per process.
    return settings.model_copy(
        update={
            "redis_url": REDIS,
            "redis_prefix": f"tollgate-test:{uuid.uuid4().hex}:",
            "redis_timeout_ms": 5000.0,
        }
    )


@pytest.fixture
async def two_apps(
    redis_settings: Settings, loaded_modules: LoadedModules
) -> AsyncIterator[tuple[FastAPI, FastAPI]]:
    """Two independent app instances (own engines, limiters, caches) sharing Redis."""
    one = create_app(redis_settings, modules=loaded_modules)
    two = create_app(redis_settings, modules=loaded_modules)
    async with one.router.lifespan_context(one), two.router.lifespan_context(two):
        yield one, two


async def test_two_instances_sharing_redis_hold_the_limit_for_the_sum(
    two_apps: tuple[FastAPI, FastAPI],
) -> None:
    one, two = two_apps
    key = await make_key(one)
    await _set_key_limits(one, key, 10, None)
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
        for a in (one, two)
    ]
    try:
        responses = await asyncio.gather(*(_predict(c, key) for c in clients for _ in range(8)))
    finally:
        for c in clients:
            await c.aclose()
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 6
    metrics = (
        await httpx.AsyncClient(transport=httpx.ASGITransport(app=one), base_url="http://t").get(
            "/metrics"
        )
    ).text
    assert 'tollgate_ratelimit_backend{backend="redis"} 1.0' in metrics


async def test_redis_down_degrades_to_per_process_without_errors(
    settings: Settings, pg_sync: object, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    async with app.router.lifespan_context(app):
        key = await make_key(app)
        await _set_key_limits(app, key, 3, None)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            at_start = (await client.get("/metrics")).text  # found out at start-up, not per call
            assert 'tollgate_ratelimit_backend{backend="memory"} 1.0' in at_start
            statuses = [(await _predict(client, key)).status_code for _ in range(4)]
            metrics = (await client.get("/metrics")).text
    assert statuses == [200, 200, 200, 429]  # still limited, per process
    assert 'tollgate_ratelimit_backend{backend="memory"} 1.0' in metrics
    assert any(
        "in-process" in r.getMessage() for r in caplog.records if r.name == "tollgate.limits"
    )


async def test_spend_cap_stops_billable_calls_with_402(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    plan = await create_plan(
        client,
        admin,
        name="capped",
        currency="usd",
        spend_cap="2",
        components=[{"unit": "request", "pricing": "per_unit", "unit_price": "0.5"}],
    )
    key = await make_key(app, "thrifty")
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    await assign(app, key.customer_id, plan["id"], month_start, immediately=True)
    await add_usage(
        app, key, month_start.replace(second=5), count=1, model="linreg"
    )  # $0.50 already spent this month
    resources(app).authenticator.forget_all()
    responses = [await _predict(client, key) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 402]
    assert [r.headers.get("x-usage-spend-period-to-date") for r in responses[:3]] == [
        "1",
        "1.5",
        "2",
    ]
    refused = responses[3]
    assert refused.json()["error"]["type"] == "quota_exceeded"
    assert refused.headers["x-usage-spend-cap"] == "2"
    # The body shows the amounts as the headers do, not as the NUMERIC column holds them.
    error = refused.json()["error"]
    assert error["details"] == {"spend": "2", "cap": "2", "currency": "usd"}, error
    assert error["message"].endswith("cap of 2 USD"), error
    rows = await ledger(app)
    assert [(r.status_code, r.billable) for r in rows][-1] == (402, False)


async def test_included_quota_only_plan(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    plan = await create_plan(
        client,
        admin,
        name="free",
        currency="usd",
        spend_cap="0",
        components=[{"unit": "item", "pricing": "per_unit", "unit_price": "0.01", "included": "5"}],
    )
    key = await make_key(app, "freeloader")
    await assign(app, key.customer_id, plan["id"], datetime.now(UTC), immediately=True)
    resources(app).authenticator.forget_all()
    assert (await _predict(client, key, 3)).status_code == 200
    assert (await _predict(client, key, 3)).status_code == 402  # 6 > 5 included
    assert (await _predict(client, key, 2)).status_code == 200  # exactly 5
    assert (await _predict(client, key, 1)).status_code == 402


async def _infer_v2(client: httpx.AsyncClient, key: CreatedKey) -> httpx.Response:
    meta = (await client.get("/v2/models/linreg", headers=bearer(key))).json()
    tensor = {"name": meta["inputs"][0]["name"], "shape": [1, 10], "datatype": "FP32"}
    return await client.post(
        "/v2/models/linreg/infer",
        json={"inputs": [{**tensor, "data": ROW}]},
        headers=bearer(key),
    )


async def test_spend_cap_with_the_finest_compute_price_stays_exact(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Ten decimal places per compute second (the most a plan takes) times microseconds of
    compute: every predict is served, and the spend the cap is checked against is exact."""
    admin = await make_key(app, "ops", (Scope.admin,))
    price = Decimal("0.7777777777")
    plan = await create_plan(
        client,
        admin,
        name="fine",
        currency="usd",
        spend_cap="1000000",
        components=[{"unit": "compute_second", "pricing": "per_unit", "unit_price": str(price)}],
    )
    key = await make_key(app, "fine-grained")
    await assign(app, key.customer_id, plan["id"], datetime.now(UTC), immediately=True)
    resources(app).authenticator.forget_all()
    responses = []
    for _ in range(4):
        responses += [await _predict(client, key), await _infer_v2(client, key)]
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    served = sum(r.compute_us for r in await ledger(app) if r.customer_id == key.customer_id)
    last = await _predict(client, key)
    assert last.status_code == 200, last.text
    expected = Decimal(served) / 1_000_000 * price  # exact: 16 places, well within 28 digits
    assert Decimal(last.headers["x-usage-spend-period-to-date"]) == expected


def test_usage_spend_is_exact_at_the_largest_amounts() -> None:
    plan = PlanSnapshot(
        plan_version_id=1,
        currency="usd",
        components=(
            PriceComponent.from_dict(
                {
                    "unit": "compute_second",
                    "pricing": "per_unit",
                    "unit_price": "99999999999999.9999999999",
                }
            ),
            PriceComponent.from_dict(
                {"unit": "request", "pricing": "per_unit", "unit_price": "0.0000000001"}
            ),
        ),
        spend_cap=Decimal("99999999999999.9999999999"),
        requests_per_minute=None,
        items_per_minute=None,
        effective_from=datetime.now(UTC),
    )
    totals = {("linreg", None): [10**12 + 1, 0, 999_999_999_999_999]}
    with localcontext(Context(prec=100)):
        expected = Decimal("999999999.999999") * Decimal("99999999999999.9999999999") + Decimal(
            "100.0000000001"
        )
    assert usage_spend(plan, totals) == expected


async def test_a_plan_priced_too_finely_before_bounds_is_402_not_500(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A 199-digit compute price (accepted before amounts were bounded) cannot be rated
    exactly once compute is recorded: the capped customer gets a clear 402, not a 500."""
    admin = await make_key(app, "ops", (Scope.admin,))
    plan = await create_plan(
        client,
        admin,
        name="legacy",
        currency="usd",
        spend_cap="1000000",
        components=[{"unit": "compute_second", "pricing": "per_unit", "unit_price": "1"}],
    )
    async with resources(app).sessionmaker() as session, session.begin():
        version = await session.scalar(select(PlanVersion))
        assert version is not None
        version.components = [{**version.components[0], "unit_price": "0." + "7" * 199}]
    key = await make_key(app, "legacy-customer")
    await assign(app, key.customer_id, plan["id"], datetime.now(UTC), immediately=True)
    resources(app).authenticator.forget_all()
    first = await _predict(client, key)
    assert first.status_code == 200, first.text  # no compute recorded yet
    v1, v2 = await _predict(client, key), await _infer_v2(client, key)
    assert (v1.status_code, v2.status_code) == (402, 402), (v1.text, v2.text)
    assert v1.json()["error"]["type"] == "plan_not_ratable"
    assert "cannot be computed exactly" in v2.json()["error"]  # V2 errors are plain strings
