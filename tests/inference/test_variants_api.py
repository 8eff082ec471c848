"""Compressed variants through the API: addressable as name:variant, listed with accuracy,
size and speed, held-out accuracy through the API equals the manifest, fp16 refused
cleanly without a GPU, and the ledger records the variant so plans can price it."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

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


async def test_the_variant_served_is_named_in_answers_metrics_and_ledger(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """cnn:int8 answers as cnn:int8 everywhere (/v1, /v2, metrics, the ledger); the base
    model keeps its plain name, variant null in /v1 and "" as a metric label."""
    key = await make_key(app)
    _, test = digits_split()
    one = test.x[:1].numpy()
    for ref, variant in (("cnn", None), ("cnn:int8", "int8")):
        v1 = await client.post(
            f"/v1/models/{ref}/predict", json={"inputs": one.tolist()}, headers=bearer(key)
        )
        assert v1.status_code == 200, v1.text
        assert (v1.json()["model"], v1.json()["variant"]) == (ref, variant)

        tensor = {"name": "image", "shape": list(one.shape), "datatype": "FP32"}
        v2 = await client.post(
            f"/v2/models/{ref}/infer",
            json={"inputs": [{**tensor, "data": one.ravel().tolist()}]},
            headers=bearer(key),
        )
        assert v2.status_code == 200, v2.text
        assert v2.json()["model_name"] == ref
        # V2 parameters are never null: the base model has none.
        assert v2.json().get("parameters") == ({"variant": variant} if variant else None)
        metadata = await client.get(f"/v2/models/{ref}", headers=bearer(key))
        assert metadata.json()["name"] == ref

    rows = await ledger(app)
    assert sorted((r.endpoint, r.model, r.variant or "") for r in rows) == [
        ("v1.predict", "cnn", ""),
        ("v1.predict", "cnn", "int8"),
        ("v2.infer", "cnn", ""),
        ("v2.infer", "cnn", "int8"),
    ]
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
        for sample in family.samples
    }
    for variant in ("", "int8"):
        labels = {"model": "cnn", "variant": variant, "version": "1"}
        for name, extra in (
            ("tollgate_requests_total", {"status": "200"}),
            ("tollgate_items_total", {}),
            ("tollgate_inference_duration_seconds_count", {"device": "cpu"}),
            ("tollgate_inference_batch_size_sum", {}),  # items: no warm-up forward in it
            ("tollgate_inference_queue_seconds_count", {}),
        ):
            wanted = (name, tuple(sorted({**labels, **extra}.items())))
            assert samples.get(wanted) == 2.0, wanted
        duration = (
            "tollgate_request_duration_seconds_count",
            (("model", "cnn"), ("variant", variant)),
        )
        assert samples.get(duration) == 2.0, duration
