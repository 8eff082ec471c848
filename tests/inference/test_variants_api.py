"""Compressed variants through the API: addressable as name:variant, listed with accuracy,
size and speed, held-out accuracy through the API equals the manifest, fp16 refused
cleanly without a GPU, and the ledger records the variant so plans can price it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI

from app.keys.schemas import Scope
from models.data import digits_split
from models.manifest import discover
from tests.conftest import bearer, ledger, make_key
from tests.paths import REPO_ROOT

MANIFESTS = {(m.variant or ""): m for _, m in discover(REPO_ROOT / "models") if m.name == "cnn"}


async def test_listing_shows_variants_with_their_numbers(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    listing = {
        m["id"]: m for m in (await client.get("/v1/models", headers=bearer(key))).json()["data"]
    }
    assert {"cnn", "cnn:int8", "cnn:fp16", "cnn:pruned", "cnn:distilled"} <= set(listing)
    for ref, info in listing.items():
        if not ref.startswith("cnn"):
            continue
        assert info["metrics"]["test_accuracy"] >= 0.97
        assert info["size_bytes"] > 0
        assert info["measured"]["cpu_items_per_s_batch32"] > 0
    assert listing["cnn:int8"]["size_bytes"] < listing["cnn"]["size_bytes"]
    fp16 = listing["cnn:fp16"]
    assert fp16["available"] is torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "CUDA" in fp16["unavailable_reason"]


@pytest.mark.parametrize("variant", ["int8", "pruned", "distilled"])
async def test_variant_accuracy_through_the_api_matches_its_manifest(
    app: FastAPI, client: httpx.AsyncClient, variant: str
) -> None:
    key = await make_key(app)
    _, test = digits_split()
    labels: list[int] = []
    for start in range(0, len(test.x), 64):
        response = await client.post(
            f"/v1/models/cnn:{variant}/predict",
            json={"inputs": test.x[start : start + 64].tolist()},
            headers=bearer(key),
        )
        assert response.status_code == 200, response.text
        labels += [int(o["label"]) for o in response.json()["outputs"]]
    accuracy = float(np.mean(np.array(labels) == test.y.numpy()))
    assert accuracy == pytest.approx(MANIFESTS[variant].metrics["test_accuracy"], abs=1e-6)
    rows = await ledger(app)
    assert {(r.model, r.variant) for r in rows} == {("cnn", variant)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is served on this GPU machine")
async def test_fp16_without_a_gpu_is_a_clear_4xx(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    _, test = digits_split()
    response = await client.post(
        "/v1/models/cnn:fp16/predict", json={"inputs": test.x[0].tolist()}, headers=bearer(key)
    )
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "variant_unavailable"
    unknown = await client.post(
        "/v1/models/cnn:int4/predict", json={"inputs": test.x[0].tolist()}, headers=bearer(key)
    )
    assert unknown.status_code == 404


async def test_unknown_or_empty_variant_is_404(app: FastAPI, client: httpx.AsyncClient) -> None:
    """`cnn:` is not `cnn` (it used to be served, echoing the name `cnn:`)."""
    key = await make_key(app, "ops", (Scope.predict, Scope.admin))
    for ref in ("cnn:", "cnn:nope", "linreg:"):
        v1 = await client.post(
            f"/v1/models/{ref}/predict", json={"inputs": [0.1] * 10}, headers=bearer(key)
        )
        assert v1.status_code == 404, (ref, v1.text)
        assert v1.json()["error"]["type"] == "model_not_found"
        v2 = await client.get(f"/v2/models/{ref}", headers=bearer(key))
        assert v2.status_code == 404, (ref, v2.text)
    assert (
        await client.post(
            "/v1/models/linreg/predict", json={"inputs": [0.1] * 10}, headers=bearer(key)
        )
    ).status_code == 200
