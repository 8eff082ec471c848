"""Promise 1: no unmetered prediction. Group commit writes every row exactly once, and a
ledger that cannot be written means 503 and no prediction."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.config import Settings
from app.keys.schemas import Scope
from app.main import create_app
from app.metering.writer import LedgerUnavailable, UsageRow
from app.resources import resources
from tests.conftest import bearer, ledger, make_key

ROW = [0.05] * 10


async def test_concurrent_requests_each_get_exactly_one_row(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    n = 200
    responses = await asyncio.gather(
        *(
            client.post("/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key))
            for _ in range(n)
        )
    )
    assert [r.status_code for r in responses] == [200] * n
    ids = [r.json()["request_id"] for r in responses]
    assert len(set(ids)) == n
    rows = await ledger(app)
    assert sorted(r.request_id for r in rows) == sorted(ids)
    assert all(r.billable and r.items == 1 and r.status_code == 200 for r in rows)
    assert all(r.model == "linreg" and r.version == "1" and r.device == "cpu" for r in rows)
    assert all(r.latency_us >= r.compute_us >= 0 for r in rows)

    # Group commit really grouped: fewer transactions than rows.
    metrics = (await client.get("/metrics")).text
    commits = _sample(metrics, "tollgate_meter_batch_size_count")
    rows_written = _sample(metrics, "tollgate_meter_batch_size_sum")
    assert rows_written == n
    assert commits < n


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def _row(key_id: int, customer_id: int, request_id: str) -> UsageRow:
    return UsageRow(
        request_id=request_id,
        api_key_id=key_id,
        customer_id=customer_id,
        endpoint="test",
        model="linreg",
        version="1",
        variant=None,
        device="cpu",
        items=1,
        compute_us=1,
        latency_us=1,
        status_code=200,
        billable=True,
        created_at=datetime.now(UTC),
    )


async def test_unwritable_ledger_means_503_and_no_prediction(
    app: FastAPI, client: httpx.AsyncClient, pg_sync: object
) -> None:
    key = await make_key(app)
    assert (
        await client.post("/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key))
    ).status_code == 200
    async with resources(app).engine.begin() as conn:
        await conn.execute(text("ALTER TABLE usage_events RENAME TO usage_events_gone"))
    try:
        response = await client.post(
            "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
        )
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["type"] == "ledger_unavailable"
        assert "outputs" not in body
        assert response.headers["retry-after"]
    finally:
        async with resources(app).engine.begin() as conn:
            await conn.execute(text("ALTER TABLE usage_events_gone RENAME TO usage_events"))
    # The service recovers by itself once the ledger is back.
    again = await client.post(
        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
    )
    assert again.status_code == 200
    assert len(await ledger(app)) == 2


async def test_ledger_commit_timeout_is_503(settings: Settings, pg_sync: object) -> None:
    """A ledger that hangs (table locked by someone else) times out into 503, not a hang."""
    app = create_app(settings.model_copy(update={"meter_commit_timeout_s": 0.5}))
    async with app.router.lifespan_context(app):
        key = await make_key(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async with resources(app).engine.connect() as locker:
                await locker.execute(text("LOCK TABLE usage_events IN ACCESS EXCLUSIVE MODE"))
                response = await client.post(
                    "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
                )
                await locker.rollback()
            assert response.status_code == 503
            assert "outputs" not in response.json()
            assert (
                await client.post(
                    "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
                )
            ).status_code == 200
        rows = await ledger(app)
        assert [r.status_code for r in rows] == [200]


async def test_every_2xx_has_its_row_under_mixed_traffic(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    good, bad = await make_key(app, "good"), await make_key(app, "other")
    calls = []
    for i in range(60):
        key = good if i % 2 else bad
        payload = {"inputs": ROW} if i % 3 else {"inputs": [1, 2]}
        calls.append(client.post("/v1/models/linreg/predict", json=payload, headers=bearer(key)))
    responses = await asyncio.gather(*calls)
    rows = {r.request_id: r for r in await ledger(app)}
    assert len(rows) == len(responses)
    for response in responses:
        row = rows[response.headers["x-request-id"]]
        assert row.status_code == response.status_code
        assert row.billable == (response.status_code == 200)


async def test_shutdown_drains_queued_rows(settings: Settings, pg_sync: object) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        key = await make_key(app)
        meter = resources(app).meter
        pending = [
            asyncio.create_task(meter.record(_row(key.key_id, key.customer_id, f"drain-{i}")))
            for i in range(50)
        ]
        await asyncio.sleep(0)  # queued, not necessarily committed
    # The lifespan exit (shutdown) waited for every queued row.
    assert all(t.done() and t.exception() is None for t in pending)
    engine = pg_sync
    with engine.connect() as conn:  # type: ignore[attr-defined]
        count = conn.execute(
            text("SELECT count(*) FROM usage_events WHERE request_id LIKE 'drain-%'")
        ).scalar()
    assert count == 50


async def test_usage_endpoint_reports_own_customer_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    mine, theirs = await make_key(app, "mine"), await make_key(app, "theirs")
    for _ in range(3):
        await client.post(
            "/v1/models/linreg/predict", json={"inputs": [ROW, ROW]}, headers=bearer(mine)
        )
    await client.post("/v1/models/linreg/predict", json={"inputs": [1]}, headers=bearer(mine))
    await client.post("/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(theirs))

    by_model = await client.get("/v1/usage", params={"group_by": "model"}, headers=bearer(mine))
    assert by_model.status_code == 200, by_model.text
    body = by_model.json()
    assert body["customer_id"] == mine.customer_id
    assert [
        (b["key"], b["requests"], b["billable_requests"], b["errors"], b["items"])
        for b in body["data"]
    ] == [("linreg", 4, 3, 1, 6)]

    by_day = (await client.get("/v1/usage", headers=bearer(mine))).json()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert [(b["key"], b["requests"]) for b in by_day["data"]] == [(today, 4)]
    assert by_day["total"]["items"] == 6

    later = datetime.now(UTC) + timedelta(days=1)
    empty = await client.get(
        "/v1/usage",
        params={"start": later.isoformat(), "end": (later + timedelta(days=1)).isoformat()},
        headers=bearer(mine),
    )
    assert empty.json()["data"] == []


async def test_usage_by_model_keeps_variants_apart_and_by_variant_adds_models(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """``group_by=model`` keys by the model as called (``cnn`` and ``cnn:int8`` apart);
    ``group_by=variant`` keys by variant across models, "" for the base models."""
    key = await make_key(app, "variants", (Scope.predict, Scope.billing))
    image = [[[0.5] * 28] * 28] * 3
    calls = [("cnn", image), ("cnn:int8", image), ("cnn:int8", [image, image])]
    calls += [("cnn:pruned", image), ("linreg", ROW), ("cnn:int8", [1])]  # the last: a 422
    for ref, inputs in calls:
        await client.post(f"/v1/models/{ref}/predict", json={"inputs": inputs}, headers=bearer(key))

    def buckets(body: dict) -> list[tuple[str, int, int, int]]:  # type: ignore[type-arg]
        return [(b["key"], b["requests"], b["billable_requests"], b["items"]) for b in body["data"]]

    by_model = await client.get("/v1/usage", params={"group_by": "model"}, headers=bearer(key))
    assert by_model.status_code == 200, by_model.text
    assert buckets(by_model.json()) == [
        ("cnn", 1, 1, 1),
        ("cnn:int8", 3, 2, 3),
        ("cnn:pruned", 1, 1, 1),
        ("linreg", 1, 1, 1),
    ]
    by_variant = await client.get("/v1/usage", params={"group_by": "variant"}, headers=bearer(key))
    assert by_variant.status_code == 200, by_variant.text
    assert by_variant.json()["group_by"] == "variant"
    assert buckets(by_variant.json()) == [("", 2, 2, 2), ("int8", 3, 2, 3), ("pruned", 1, 1, 1)]
    assert by_variant.json()["total"] == by_model.json()["total"]
    # The customer's own billing view answers the same.
    for group_by, report in (("model", by_model), ("variant", by_variant)):
        billing = await client.get(
            "/v1/billing/usage", params={"group_by": group_by}, headers=bearer(key)
        )
        assert billing.status_code == 200, billing.text
        assert billing.json()["data"] == report.json()["data"]


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "week"},
        {"start": "yesterday"},
        {"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"end": "0001-01-05"},
        {"end": "9999-12-31T23:59:59-14:00"},
        {"start": "0001-01-01T00:00:00+14:00", "end": "0001-01-05T00:00:00Z"},
        {"start": "9999-12-31T23:59:59-14:00"},
        {"start": "1969-12-31T00:00:00Z", "end": "1970-01-02T00:00:00Z"},
    ],
)
async def test_usage_rejects_bad_queries(
    app: FastAPI, client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    key = await make_key(app)
    response = await client.get("/v1/usage", params=params, headers=bearer(key))
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


async def test_usage_window_without_a_time_zone_is_utc(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    response = await client.get(
        "/v1/usage",
        params={"start": "2026-01-01", "end": "2026-01-02T02:00:00+02:00"},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    assert (response.json()["start"], response.json()["end"]) == (
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
    )
    earliest = await client.get(
        "/v1/usage", params={"end": "1970-01-01T00:00:01Z"}, headers=bearer(key)
    )
    assert earliest.status_code == 200, earliest.text


async def test_database_connections_killed_mid_load(
    app: FastAPI, client: httpx.AsyncClient, pg_sync: object
) -> None:
    """Every server connection is terminated while requests are in flight: each request
    either gets its prediction with a ledger row, or a 503 without a prediction; then the
    service recovers by itself."""
    key = await make_key(app)
    # Warm the key cache so the cut hits the ledger, not authentication.
    assert (
        await client.post("/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key))
    ).status_code == 200

    async def burst() -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
                    )
                    for _ in range(40)
                )
            )
        )

    async def cut() -> None:
        await asyncio.sleep(0.005)
        engine = pg_sync
        with engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'tollgate' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"  # this test's database only
                )
            )

    responses, _ = await asyncio.gather(burst(), asyncio.to_thread(asyncio.run, cut()))
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}, statuses
    for r in responses:
        if r.status_code == 503:
            assert "outputs" not in r.json()

    recovered = await client.post(
        "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
    )
    assert recovered.status_code == 200
    rows = {row.request_id: row for row in await ledger(app)}
    for r in [*responses, recovered]:
        if r.status_code == 200:
            assert rows[r.json()["request_id"]].billable


async def test_a_killed_idle_ledger_connection_costs_no_request(
    app: FastAPI, client: httpx.AsyncClient, pg_sync: object
) -> None:
    """After a database restart (here: every backend terminated while idle), the next
    request is served: the writer retries once on a fresh connection."""
    key = await make_key(app)
    predict = {"json": {"inputs": ROW}, "headers": bearer(key)}
    assert (await client.post("/v1/models/linreg/predict", **predict)).status_code == 200
    with pg_sync.begin() as conn:  # type: ignore[attr-defined]
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'tollgate' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"  # this test's database only
            )
        ).scalar()
    assert killed >= 1
    response = await client.post("/v1/models/linreg/predict", **predict)
    assert response.status_code == 200, response.text
    assert len(await ledger(app)) == 2


async def test_rows_are_stored_exactly_as_recorded(app: FastAPI) -> None:
    """Every column survives the trip (the batch travels as JSON): awkward strings, nulls,
    large numbers, microseconds, and a naive timestamp taken as UTC."""
    key = await make_key(app)
    aware = datetime(2026, 11, 30, 12, 34, 56, 123456, tzinfo=UTC)
    rows = [
        UsageRow(
            request_id='odd-"quote"-\\-\u00e9-\U0001f600',
            api_key_id=key.key_id,
            customer_id=key.customer_id,
            endpoint="v2.infer",
            model="cnn",
            version="1",
            variant="int8",
            device="cuda",
            items=64,
            compute_us=2**40,
            latency_us=0,
            status_code=422,
            billable=False,
            created_at=aware,
        ),
        UsageRow(
            request_id="naive-time",
            api_key_id=key.key_id,
            customer_id=key.customer_id,
            endpoint="v1.predict",
            model=None,
            version=None,
            variant=None,
            device=None,
            items=0,
            compute_us=0,
            latency_us=7,
            status_code=401,
            billable=True,
            created_at=aware.replace(tzinfo=None),
        ),
    ]
    await asyncio.gather(*(resources(app).meter.record(row) for row in rows))
    stored = {r.request_id: r for r in await ledger(app)}
    for row in rows:
        got = stored[row.request_id]
        for column in ("api_key_id", "customer_id", "endpoint", "model", "version", "variant"):
            assert getattr(got, column) == getattr(row, column), column
        for column in ("device", "items", "compute_us", "latency_us", "status_code", "billable"):
            assert getattr(got, column) == getattr(row, column), column
        assert got.created_at == aware


async def test_commit_lanes_overlap_up_to_the_limit(
    settings: Settings, pg_sync: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With N lanes, up to N commits run at once, each on its own connection, and every
    row is still committed exactly once."""
    from app.metering import writer as writer_module

    app = create_app(settings.model_copy(update={"meter_lanes": 3}))
    in_flight, peak, connections = 0, 0, set()
    real_insert = writer_module._insert_postgres

    async def slow_insert(conn: object, rows: list[UsageRow]) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        connections.add(id(conn))
        try:
            await asyncio.sleep(0.02)  # hold the lane so that others must open
            await real_insert(conn, rows)
        finally:
            in_flight -= 1

    monkeypatch.setattr(writer_module, "_insert_postgres", slow_insert)
    async with app.router.lifespan_context(app):
        key = await make_key(app)
        meter = resources(app).meter
        pending = []
        for i in range(200):  # rows keep arriving while earlier commits are in flight
            row = _row(key.key_id, key.customer_id, f"lane-{i}")
            pending.append(asyncio.create_task(meter.record(row)))
            await asyncio.sleep(0.001)
        await asyncio.gather(*pending)
    assert peak == 3
    assert len(connections) == 3
    with pg_sync.connect() as conn:  # type: ignore[attr-defined]
        count = conn.execute(
            text(
                "SELECT count(DISTINCT request_id) FROM usage_events WHERE request_id LIKE 'lane-%'"
            )
        ).scalar()
        total = conn.execute(
            text("SELECT count(*) FROM usage_events WHERE request_id LIKE 'lane-%'")
        ).scalar()
    assert count == total == 200


async def test_sqlite_ledger_takes_one_lane(tmp_path: object) -> None:
    from pathlib import Path

    from sqlalchemy.ext.asyncio import create_async_engine

    from app.metering.writer import MeterWriter
    from app.observability.metrics import Metrics

    assert isinstance(tmp_path, Path)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        assert MeterWriter(engine, Metrics(), lanes=4).lanes == 1
    finally:
        await engine.dispose()


async def test_a_row_the_database_refuses_fails_alone(app: FastAPI) -> None:
    """Postgres text cannot hold NUL: such a row must not take its batch-mates down."""
    key = await make_key(app)
    rows = [_row(key.key_id, key.customer_id, f"ok-{i}") for i in range(12)]
    rows[3] = dataclasses.replace(rows[3], request_id="bad-a", model="nul\x00name")
    rows[9] = dataclasses.replace(rows[9], request_id="bad-b", model="\x00")
    outcomes = await asyncio.gather(
        *(resources(app).meter.record(row) for row in rows), return_exceptions=True
    )
    failed = {row.request_id for row, o in zip(rows, outcomes, strict=True) if o is not None}
    if resources(app).engine.dialect.name == "postgresql":
        assert failed == {"bad-a", "bad-b"}
        assert all(isinstance(o, LedgerUnavailable) for o in outcomes if o is not None)
    else:  # SQLite keeps NUL in text
        assert failed == set()
    stored = {r.request_id for r in await ledger(app)}
    assert stored == {row.request_id for row in rows} - failed


async def test_a_nul_in_the_model_path_costs_no_other_request(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/models/%00/predict" if i % 5 == 0 else "/v1/models/linreg/predict",
                json={"inputs": ROW},
                headers=bearer(key),
            )
            for i in range(40)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 32 + [404] * 8
    rows = await ledger(app)
    assert len(rows) == 40
    assert sorted(r.model for r in rows if r.status_code == 404) == ["\ufffd"] * 8


async def test_usage_total_compute_is_exact_whatever_the_grouping(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Totals add integer microseconds: 0.1 ms + 0.2 ms is 0.3 ms, not 0.30000000000000004."""
    key = await make_key(app)
    base = _row(key.key_id, key.customer_id, "exact-a")
    rows = [
        dataclasses.replace(base, compute_us=100, model="a"),
        dataclasses.replace(base, request_id="exact-b", compute_us=200, model="b"),
    ]
    await asyncio.gather(*(resources(app).meter.record(row) for row in rows))
    by_model = (
        await client.get("/v1/usage", params={"group_by": "model"}, headers=bearer(key))
    ).json()
    assert [(b["key"], b["compute_us"], b["compute_ms"]) for b in by_model["data"]] == [
        ("a", 100, 0.1),
        ("b", 200, 0.2),
    ]
    by_day = (await client.get("/v1/usage", headers=bearer(key))).json()
    for report in (by_model, by_day):
        assert (report["total"]["compute_us"], report["total"]["compute_ms"]) == (300, 0.3)
