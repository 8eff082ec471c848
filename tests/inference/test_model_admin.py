"""Admins load, unload and choose default versions without a restart; requests in flight
during an unload finish. Load and unload act on exactly one variant (``cnn`` is the base
model only, ``cnn:int8`` that variant only); readiness waits only for the variants the
catalog wants loaded."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.catalog import repository
from app.keys.schemas import CreatedKey, Scope
from app.orm import ModelVariant
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
    # the one variant acted on, as this replica now has it
    assert (unloaded.json()["id"], unloaded.json()["state"]) == ("cnn", "unloaded")
    assert not unloaded.json()["available"]
    assert [r.status_code for r in await asyncio.gather(*in_flight)] == [200] * 8

    gone = await client.post("/v1/models/cnn/predict", json=body, headers=bearer(dev))
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "model_not_found"
    # unloading is a desired state: asking again changes nothing and says so
    again = await client.post("/admin/models/cnn/versions/1/unload", headers=bearer(admin))
    assert (again.status_code, again.json()["state"]) == (200, "unloaded")
    for missing in ("cnn:nope/versions/1", "cnn/versions/9"):
        response = await client.post(f"/admin/models/{missing}/unload", headers=bearer(admin))
        assert response.status_code == 404, missing

    loaded = await client.post("/admin/models/cnn/versions/1/load", headers=bearer(admin))
    assert loaded.status_code == 200
    assert (loaded.json()["id"], loaded.json()["state"]) == ("cnn", "loaded")
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
    assert actions == ["model.default", "model.load", "model.unload"]  # the repeat changed nothing


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


async def _predict_status(client: httpx.AsyncClient, dev: CreatedKey, ref: str) -> int:
    image = [[[0.5] * 28] * 28] * 3
    response = await client.post(
        f"/v1/models/{ref}/predict", json={"inputs": image}, headers=bearer(dev)
    )
    return response.status_code


async def test_unloading_a_variant_leaves_the_base_serving_and_vice_versa(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "ops", (Scope.admin,))
    dev = await make_key(app)
    assert await _predict_status(client, dev, "cnn") == 200
    assert await _predict_status(client, dev, "cnn:int8") == 200

    off = await client.post("/admin/models/cnn:int8/versions/1/unload", headers=bearer(admin))
    assert (off.json()["id"], off.json()["state"]) == ("cnn:int8", "unloaded")
    assert await _predict_status(client, dev, "cnn:int8") == 404
    assert await _predict_status(client, dev, "cnn") == 200
    assert await _predict_status(client, dev, "cnn:pruned") == 200

    on = await client.post("/admin/models/cnn:int8/versions/1/load", headers=bearer(admin))
    assert (on.json()["id"], on.json()["state"]) == ("cnn:int8", "loaded")
    off = await client.post("/admin/models/cnn/versions/1/unload", headers=bearer(admin))
    assert (off.json()["id"], off.json()["state"]) == ("cnn", "unloaded")
    assert await _predict_status(client, dev, "cnn") == 404
    assert await _predict_status(client, dev, "cnn:int8") == 200

    states = {
        m["id"]: m["state"]
        for m in (await client.get("/admin/models", headers=bearer(admin))).json()["data"]
    }
    assert states["cnn"] == "unloaded"
    assert states["cnn:int8"] == states["cnn:pruned"] == "loaded"


async def test_readiness_ignores_an_admin_unload_but_not_an_archive_that_fails_to_load(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """An unloaded variant is not wanted, so the replica is ready without it; a published
    variant of a default version whose archive cannot be loaded keeps it out of rotation
    (503) until it loads or is taken out of service, while the rest keeps serving."""
    admin = await make_key(app, "ops", (Scope.admin,))
    dev = await make_key(app)
    state = resources(app)
    assert (await client.get("/readyz")).status_code == 200
    assert (
        await client.post("/admin/models/cnn/versions/1/unload", headers=bearer(admin))
    ).status_code == 200
    assert (await client.get("/readyz")).status_code == 200

    async with state.sessionmaker() as session:
        version = await repository.find_version(session, "cnn", "1")
        assert version is not None
        session.add(
            ModelVariant(
                version_id=version.id,
                variant="broken",
                archive_format="torchscript",
                archive_uri="store:cnn/1/broken/model.pt",  # never put in the store
                archive_sha256="0" * 64,
                archive_bytes=1,
                dtype="float32",
                requires_device=None,
                published=True,
                unpublished_reason=None,
                loaded=True,
                metrics={},
                measured={},
                compression=None,
            )
        )
        await session.flush()
        await repository.bump_revision(session)
        await session.commit()
    await state.catalog_sync.reconcile()

    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "cnn:broken@1 failed" in ready.json()["checks"]["models"]
    broken = await client.post(
        "/v1/models/cnn:broken/predict",
        json={"inputs": [[[0.5] * 28] * 28] * 3},
        headers=bearer(dev),
    )
    assert broken.status_code == 503
    assert await _predict_status(client, dev, "cnn:int8") == 200

    out = await client.put(
        "/admin/models/cnn:broken/versions/1/published",
        json={"published": False},
        headers=bearer(admin),
    )
    assert (out.status_code, out.json()["state"]) == (200, "unpublished")
    assert (await client.get("/readyz")).status_code == 200
