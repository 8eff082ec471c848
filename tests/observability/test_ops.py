from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.config import Settings
from app.main import create_app
from app.resources import resources
from tests.conftest import bearer, make_key

REQUIRED = [
    "tollgate_requests_total",
    "tollgate_request_duration_seconds",
    "tollgate_inference_duration_seconds",
    "tollgate_meter_batch_size",
    "tollgate_meter_commit_seconds",
    "tollgate_meter_queue_depth",
]


async def test_metrics_export_the_documented_series_without_secrets(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = await make_key(app, "metrics-customer")
    with caplog.at_level(logging.DEBUG):
        for payload in ({"inputs": [0.1] * 10}, {"inputs": [1]}):
            await client.post("/v1/models/linreg/predict", json=payload, headers=bearer(key))
    response = await client.get("/metrics")
    assert response.status_code == 200
    exposition = response.text
    for name in REQUIRED:
        assert f"# TYPE {name} " in exposition, name
    # variant "" is the base model (docs/operations.md)
    assert (
        'tollgate_requests_total{model="linreg",status="200",variant="",version="1"} 1.0'
        in exposition
    )
    assert 'status="422"' in exposition
    # Promise 6: never a key, prefix or customer in metrics or logs.
    for secret in (key.secret, key.prefix, "metrics-customer"):
        assert secret not in exposition
        assert secret not in caplog.text


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["ledger"] == "ok"
    for path in ("/healthz", "/readyz"):  # load balancers that probe with HEAD
        assert (await client.head(path)).status_code == 200, path


async def test_readiness_fails_when_the_database_is_unreachable(settings: Settings) -> None:
    app = create_app(
        settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/none"})
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["ledger"].startswith("unreachable")
            assert (await client.head("/readyz")).status_code == 503
            # Auth needs the key store: a clear 503, never a 500.
            response = await client.post(
                "/v1/models/linreg/predict",
                json={"inputs": [0.0] * 10},
                headers=bearer("tg_" + "a" * 32),
            )
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "database_unavailable"


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/models/{model}/predict" in spec["paths"]
    predict = spec["paths"]["/v1/models/{model}/predict"]["post"]
    assert {"401", "403", "413", "422", "503"} <= set(predict["responses"])
    assert "requestBody" in predict


async def test_pg_session_timezone_is_utc(app: FastAPI) -> None:
    async with resources(app).engine.connect() as conn:
        assert (await conn.execute(text("SHOW timezone"))).scalar() == "UTC"
