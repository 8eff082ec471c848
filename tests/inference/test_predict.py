"""Predictions through the API equal the model's offline outputs; accuracy matches the manifest."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI

from app.resources import resources
from models.data import diabetes_split, digits_split
from models.manifest import discover, load_weights
from tests.conftest import bearer, ledger, make_key
from tests.paths import REPO_ROOT


def _offline(name: str) -> tuple[torch.nn.Module, dict[str, float]]:
    for mdir, manifest in discover(REPO_ROOT / "models"):
        if manifest.name == name:
            return load_weights(mdir, manifest), manifest.metrics
    raise AssertionError(f"no shipped model {name}")


async def test_list_and_describe_models(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    listing = (await client.get("/v1/models", headers=bearer(key))).json()["data"]
    names = {m["name"] for m in listing}
    assert {"cnn", "linreg"} <= names
    cnn = (await client.get("/v1/models/cnn", headers=bearer(key))).json()
    # the declared value range is part of the card (inputs outside it are refused)
    assert cnn["inputs"] == [
        {"name": "image", "shape": [3, 28, 28], "dtype": "float32", "range": [0.0, 1.0]}
    ]
    assert cnn["labels"] == [str(i) for i in range(10)]
    assert cnn["metrics"]["test_accuracy"] >= 0.97
    assert cnn["device"] == "cpu"
    missing = await client.get("/v1/models/nope", headers=bearer(key))
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "model_not_found"


async def test_cnn_outputs_equal_offline_and_accuracy_matches_manifest(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    model, metrics = _offline("cnn")
    _, test = digits_split()
    with torch.inference_mode():
        offline = model(test.x).numpy()

    logits: list[list[float]] = []
    labels: list[str] = []
    step = resources(app).settings.max_batch_items
    for start in range(0, len(test.x), step):
        batch = test.x[start : start + step].tolist()
        response = await client.post(
            "/v1/models/cnn/predict", json={"inputs": batch}, headers=bearer(key)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["usage"]["items"] == len(batch)
        logits += [o["logits"] for o in body["outputs"]]
        labels += [o["label"] for o in body["outputs"]]

    np.testing.assert_allclose(np.array(logits), offline, rtol=1e-4, atol=1e-4)
    accuracy = float(np.mean([int(lbl) for lbl in labels] == test.y.numpy()))
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    rows = await ledger(app)
    assert sum(r.items for r in rows) == len(test.x)
    assert all(r.billable and r.status_code == 200 for r in rows)


async def test_single_item_and_linreg_values(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    model, _ = _offline("linreg")
    _, test = diabetes_split()
    with torch.inference_mode():
        expected = model(test.x[:5]).numpy()[:, 0]

    single = await client.post(
        "/v1/models/linreg/predict", json={"inputs": test.x[0].tolist()}, headers=bearer(key)
    )
    assert single.status_code == 200
    body = single.json()
    assert body["model"] == "linreg" and body["version"] == "1"
    assert body["variant"] is None  # the base model
    assert body["request_id"] == single.headers["x-request-id"]
    assert body["outputs"][0]["target"][0] == pytest.approx(float(expected[0]), rel=1e-5)
    assert body["usage"]["items"] == 1 and body["usage"]["compute_ms"] >= 0

    batch = await client.post(
        "/v1/models/linreg/predict", json={"inputs": test.x[:5].tolist()}, headers=bearer(key)
    )
    got = [o["target"][0] for o in batch.json()["outputs"]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


async def test_explicit_version(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    row = [0.0] * 10
    ok = await client.post(
        "/v1/models/linreg/predict?version=1", json={"inputs": row}, headers=bearer(key)
    )
    assert ok.status_code == 200
    bad = await client.post(
        "/v1/models/linreg/predict?version=99", json={"inputs": row}, headers=bearer(key)
    )
    assert bad.status_code == 404
    assert bad.json()["error"]["type"] == "model_not_found"
