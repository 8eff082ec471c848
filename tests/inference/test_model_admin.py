"""Admins load, unload and choose default versions without a restart; requests in flight
during an unload finish."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.keys.schemas import Scope
from app.resources import resources
from models.data import digits_split
from tests.conftest import bearer, make_key


async def test_unload_lets_queued_requests_finish_then_load_again(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    dev = await make_key(app)
    _, test = digits_split()
    body = {"inputs": test.x[:16].tolist()}

    listing = (await client.get("/admin/models", headers=bearer(admin))).json()["data"]
    assert any(m["id"] == "cnn" and m["available"] for m in listing)

    in_flight = [
        asyncio.create_task(client.post("/v1/models/cnn/predict", json=body, headers=bearer(dev)))
        for _ in range(8)
    ]
    batcher = resources(app).registry.find("cnn").batcher
    for _ in range(500):  # wait until they are queued or running in the batcher
        if batcher.in_flight == len(in_flight):
            break
        await asyncio.sleep(0.002)
    assert batcher.in_flight > 0
    unloaded = await client.post("/admin/models/cnn/versions/1/unload", headers=bearer(admin))
    assert unloaded.status_code == 200, unloaded.text
    assert [r.status_code for r in await asyncio.gather(*in_flight)] == [200] * 8

    gone = await client.post("/v1/models/cnn/predict", json=body, headers=bearer(dev))
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "model_not_found"
    again = await client.post("/admin/models/cnn/versions/1/unload", headers=bearer(admin))
    assert again.status_code == 404

    loaded = await client.post("/admin/models/cnn/versions/1/load", headers=bearer(admin))
    assert loaded.status_code == 200
    back = await client.post("/v1/models/cnn/predict", json=body, headers=bearer(dev))
    assert back.status_code == 200

    assert (
        await client.put("/admin/models/cnn/default", json={"version": "1"}, headers=bearer(admin))
    ).status_code == 200
    assert (
        await client.put("/admin/models/cnn/default", json={"version": "9"}, headers=bearer(admin))
    ).status_code == 404
    assert (
        await client.post("/admin/models/nope/versions/1/load", headers=bearer(admin))
    ).status_code == 404
    actions = [
        e["action"]
        for e in (
            await client.get("/admin/audit", params={"target_type": "model"}, headers=bearer(admin))
        ).json()["data"]
    ]
    assert actions == ["model.default", "model.load", "model.unload"]


async def test_loading_a_model_does_not_stop_the_others(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights, graph and warm-up are built off the event loop: while cnn loads (slowly
    here), linreg keeps answering."""
    admin = await make_key(app, "ops", (Scope.admin,))
    dev = await make_key(app)
    registry = resources(app).registry
    assert (
        await client.post("/admin/models/cnn/versions/1/unload", headers=bearer(admin))
    ).status_code == 200
    real_build = registry._build
    release = threading.Event()

    def slow_build(*args: object) -> object:
        # a blocking load (until the test has its answer, at most 2 s): on the event loop it
        # would hold every request for the whole 2 s
        release.wait(timeout=2.0)
        return real_build(*args)

    monkeypatch.setattr(registry, "_build", slow_build)
    started = time.perf_counter()
    loading = asyncio.create_task(
        client.post("/admin/models/cnn/versions/1/load", headers=bearer(admin))
    )
    await asyncio.sleep(0.05)
    row = {"inputs": [0.01] * 10}
    answered = await client.post("/v1/models/linreg/predict", json=row, headers=bearer(dev))
    answered_after = time.perf_counter() - started
    loading_done = loading.done()
    release.set()
    assert answered.status_code == 200
    assert not loading_done
    assert answered_after < 1.5  # well before the blocked build would have let go
    assert (await loading).status_code == 200
    assert registry.find("cnn").available


async def test_a_request_still_sending_its_body_during_an_unload_is_answered(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """It found the model before the unload and submits after it: it used to wait forever
    on the stopped batcher (and hold up shutdown). Now it gets a 503 to retry."""
    admin = await make_key(app, "ops", (Scope.admin,))
    dev = await make_key(app)
    body = orjson.dumps({"inputs": [0.01] * 10})
    release = asyncio.Event()

    async def slow_body():  # type: ignore[no-untyped-def]
        yield body[:5]
        await release.wait()
        yield body[5:]

    pending = asyncio.create_task(
        client.post(
            "/v1/models/linreg/predict",
            content=slow_body(),
            headers={**bearer(dev), "Content-Type": "application/json"},
        )
    )
    await asyncio.sleep(0.05)  # authenticated, model found, reading the body
    unloaded = await client.post("/admin/models/linreg/versions/1/unload", headers=bearer(admin))
    assert unloaded.status_code == 200
    release.set()
    response = await asyncio.wait_for(pending, 10)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "model_overloaded"
    assert "Retry-After" in response.headers
