"""Dynamic batching: concurrent requests share forward passes, and each still gets exactly
its own outputs, its own ledger row and its share of the compute time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI

from app.config import Settings
from app.inference.predictor import LoadedModules
from app.main import create_app
from app.resources import resources
from models.data import digits_split
from models.manifest import discover, load_weights
from tests.conftest import bearer, ledger, make_key
from tests.paths import REPO_ROOT


def _sample(exposition: str, line_start: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not exported")


@pytest.fixture
async def small_batch_app(
    settings: Settings, loaded_modules: LoadedModules
) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update={"batch_max_items": 4}), modules=loaded_modules)
    async with app.router.lifespan_context(app):
        yield app


async def test_concurrent_requests_get_their_own_outputs(
    small_batch_app: FastAPI,
) -> None:
    app = small_batch_app
    key = await make_key(app)
    _, test = digits_split()
    images = test.x[:24]
    (mdir, manifest) = next(d for d in discover(REPO_ROOT / "models") if d[1].name == "cnn")
    with torch.inference_mode():
        expected = load_weights(mdir, manifest)(images).numpy()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        # Mixed request sizes (1 and 2 items) so slices of different lengths share batches.
        payloads = [images[i : i + 1] for i in range(12)] + [
            images[i : i + 2] for i in range(12, 24, 2)
        ]
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/models/cnn/predict", json={"inputs": p.tolist()}, headers=bearer(key)
                )
                for p in payloads
            )
        )
        exposition = (await client.get("/metrics")).text

    got = [o["logits"] for r in responses for o in r.json()["outputs"]]
    np.testing.assert_allclose(np.array(got), expected, rtol=1e-4, atol=1e-4)

    forwards = _sample(exposition, 'tollgate_inference_batch_size_count{model="cnn",variant=""')
    items = _sample(exposition, 'tollgate_inference_batch_size_sum{model="cnn",variant=""')
    at_most_4 = _sample(
        exposition, 'tollgate_inference_batch_size_bucket{le="4.0",model="cnn",variant=""'
    )
    # One warm-up-free run: 24 items in fewer forwards than requests, never over the cap.
    assert items == 24
    assert forwards < len(payloads)
    assert at_most_4 == forwards

    rows = await ledger(app)
    assert sorted(r.items for r in rows) == sorted(len(p) for p in payloads)
    assert all(0 <= r.compute_us <= r.latency_us for r in rows)


async def test_full_queue_is_503_with_retry_after(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"batch_queue_size": 1, "batch_max_items": 1}))
    async with app.router.lifespan_context(app):
        key = await make_key(app)
        _, test = digits_split()
        body = {"inputs": test.x[0].tolist()}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(
                *(
                    client.post("/v1/models/cnn/predict", json=body, headers=bearer(key))
                    for _ in range(30)
                )
            )
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}
        overloaded = [r for r in responses if r.status_code == 503]
        assert all(r.json()["error"]["type"] == "model_overloaded" for r in overloaded)
        assert all(r.headers["retry-after"] == "1" for r in overloaded)
        rows = await ledger(app)
        assert sorted((r.status_code, r.billable) for r in rows) == sorted(
            (s, s == 200) for s in statuses
        )


async def test_per_model_overrides_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, pg_sync: object
) -> None:
    from tests.conftest import make_settings

    monkeypatch.setenv(
        "TOLLGATE_MODEL_OVERRIDES",
        '{"cnn": {"max_batch_items": 8, "max_queue_delay_ms": 3}, '
        '"cnn:int8": {"max_batch_items": 2}}',
    )
    app = create_app(make_settings(pg_url))
    async with app.router.lifespan_context(app):
        registry = resources(app).registry
        cnn, int8 = registry.find("cnn").batcher, registry.find("cnn:int8").batcher
        linreg = registry.find("linreg").batcher
        assert (cnn.max_items, cnn.max_delay_s) == (8, 0.003)
        assert (int8.max_items, int8.max_delay_s) == (2, 0.0)  # its own entry wins
        assert linreg.max_items == resources(app).settings.batch_max_items
