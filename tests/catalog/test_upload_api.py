"""Bring your own model, end to end through the HTTP API: a model Tollgate has never seen is
uploaded (TorchScript and torch.export), its int8 variant is built, measured and published,
both answer through /v1 and /v2 like the local forward, and a plan prices them apart on one
invoice. Bad uploads are refused with their reason and leave nothing behind."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from app.billing.service import Period
from app.clock import ManualClock
from app.keys.schemas import CreatedKey, Scope
from app.orm import AuditEntry, ModelVariant, ModelVersion
from app.resources import resources
from tests.billing.helpers import assign, create_plan
from tests.catalog.mlp import Format, malicious_pickle, write_mlp
from tests.conftest import bearer, make_key


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "ops", (Scope.admin,))


@pytest.fixture
async def finance(app: FastAPI) -> CreatedKey:
    return await make_key(app, "fin", (Scope.finance,))


async def upload(
    client: httpx.AsyncClient,
    admin: CreatedKey,
    name: str,
    version: str,
    archive: bytes,
    manifest: dict[str, Any],
    eval_npz: bytes | None = None,
) -> httpx.Response:
    files: dict[str, tuple[str, bytes, str]] = {
        "archive": ("model.bin", archive, "application/octet-stream"),
        "manifest": ("manifest.json", json.dumps(manifest).encode(), "application/json"),
    }
    if eval_npz is not None:
        files["eval"] = ("eval.npz", eval_npz, "application/octet-stream")
    return await client.post(
        f"/admin/models/{name}/versions/{version}",
        files=files,
        headers=bearer(admin),
        timeout=300,
    )


def _store_files(app: FastAPI) -> list[Path]:
    root = resources(app).settings.model_store_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
async def test_an_uploaded_model_and_its_int8_variant_serve_and_bill_apart(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    finance: CreatedKey,
    clock: ManualClock,
    tmp_path: Path,
    fmt: Format,
) -> None:
    made = write_mlp(tmp_path, fmt)
    name = "digits-" + fmt.replace("_", "-")
    manifest = {**made.manifest, "name": name, "version": "1"}
    response = await upload(
        client, admin, name, "1", made.archive.read_bytes(), manifest, made.eval_npz.read_bytes()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["format"] == fmt
    cards = {v["id"]: v for v in body["variants"]}
    assert set(cards) == {name, f"{name}:int8"}
    base, int8 = cards[name], cards[f"{name}:int8"]
    assert int8["published"] and int8["state"] == "loaded", int8
    assert base["metrics"]["accuracy"] > 0.9
    assert abs(int8["metrics"]["accuracy"] - base["metrics"]["accuracy"]) <= 0.01
    for card in (base, int8):
        assert card["measured"]["cpu_items_per_s_batch1"] > 0
        assert card["measured"]["cpu_items_per_s_batch32"] > 0
        assert card["size_bytes"] == card["measured"]["size_bytes"]
    assert int8["size_bytes"] < base["size_bytes"]
    assert [s["variant"] for s in body["skipped"]] == ["fp16"]  # no CUDA here

    developer = await make_key(app, "byom-buyer")
    # the model card of both, from /v1/models/{name}
    described = await client.get(f"/v1/models/{name}", headers=bearer(developer))
    assert described.status_code == 200
    assert {v["id"] for v in described.json()["variants"]} == {name, f"{name}:int8"}

    # /v1 and /v2 answer like the local forward of the module that was uploaded
    x = np.load(made.eval_npz)["inputs"][:5].astype(np.float32)
    with torch.inference_mode():
        want = made.reference(torch.from_numpy(x)).numpy()
    plan = await create_plan(
        client,
        admin,
        name="byom",
        currency="usd",
        components=[
            {
                "unit": "request",
                "pricing": "per_unit",
                "unit_price": "0.10",
                "model": name,
                "variant": "fp32",
            },
            {
                "unit": "request",
                "pricing": "per_unit",
                "unit_price": "0.04",
                "model": name,
                "variant": "int8",
            },
        ],
    )
    period = Period.containing(clock.now())
    await assign(app, developer.customer_id, plan["id"], period.start, immediately=True)
    for ref, atol in ((name, 1e-4), (f"{name}:int8", 0.5)):
        v1 = await client.post(
            f"/v1/models/{ref}/predict", json={"inputs": x.tolist()}, headers=bearer(developer)
        )
        assert v1.status_code == 200, v1.text
        assert v1.json()["model"] == ref
        got = np.array([o["logits"] for o in v1.json()["outputs"]])
        np.testing.assert_allclose(got, want, atol=atol)
        assert [o["label"] for o in v1.json()["outputs"]] == [str(i) for i in want.argmax(1)]
        v2 = await client.post(
            f"/v2/models/{ref}/infer",
            json={
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [5, 64],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            },
            headers=bearer(developer),
        )
        assert v2.status_code == 200, v2.text
        (out,) = [o for o in v2.json()["outputs"] if o["name"] == "logits"]
        np.testing.assert_allclose(np.array(out["data"]).reshape(5, 10), want, atol=atol)

    clock.set(period.end + timedelta(days=2))
    closed = await client.post(f"/finance/periods/{period}/close", headers=bearer(finance))
    assert closed.status_code == 200, closed.text
    listing = await client.get(
        "/finance/invoices",
        params={"customer": developer.customer_id, "period": str(period)},
        headers=bearer(finance),
    )
    (summary,) = listing.json()["data"]
    invoice = (
        await client.get(f"/finance/invoices/{summary['id']}", headers=bearer(finance))
    ).json()
    assert [(x["variant"], x["quantity"], x["amount_minor"]) for x in invoice["lines"]] == [
        ("fp32", "2", 20),  # /v1 and /v2: two requests each, at 0.10 and 0.04
        ("int8", "2", 8),
    ]
    assert invoice["total_minor"] == 28


async def test_a_version_is_immutable(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, tmp_path: Path
) -> None:
    made = write_mlp(tmp_path, "torchscript")
    manifest = {**made.manifest, "name": "twice", "version": "1"}
    first = await upload(client, admin, "twice", "1", made.archive.read_bytes(), manifest)
    assert first.status_code == 201, first.text
    # no eval data: the int8 variant is built and measured but not published
    (int8,) = [v for v in first.json()["variants"] if v["variant"] == "int8"]
    assert not int8["published"] and "no eval data" in int8["unpublished_reason"]
    stored = _store_files(app)
    again = await upload(client, admin, "twice", "1", made.archive.read_bytes(), manifest)
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "version_exists"
    assert _store_files(app) == stored


async def test_a_pickle_that_runs_code_is_refused_and_never_runs(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    tmp_path: Path,
    pg_engine: Engine,
) -> None:
    marker = tmp_path / "pwned"
    made = write_mlp(tmp_path, "torchscript")
    manifest = {**made.manifest, "name": "evil", "version": "1"}
    before = _store_files(app)
    response = await upload(client, admin, "evil", "1", malicious_pickle(marker), manifest)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_archive"
    assert error["details"]["code"] == "archive_rejected"
    assert "torch.save" in error["message"]
    assert not marker.exists()
    assert _store_files(app) == before
    with pg_engine.connect() as conn:
        assert (
            conn.scalar(
                select(func.count())
                .select_from(ModelVersion)
                .where(ModelVersion.model_name == "evil")
            )
            == 0
        )
        assert conn.scalar(select(func.count()).select_from(ModelVariant)) > 0  # shipped ones
        assert (
            conn.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "model.upload")
            )
            == 0
        )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            {
                "outputs": [{"name": "logits", "dtype": "float32", "shape": [12]}],
                "labels": [str(i) for i in range(12)],
            },
            "output_shape",
        ),
        ({"name": "other"}, "manifest_mismatch"),
        ({"license": ""}, "manifest_invalid"),
    ],
)
async def test_a_bad_upload_says_why_and_leaves_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    tmp_path: Path,
    change: dict[str, Any],
    code: str,
) -> None:
    made = write_mlp(tmp_path, "torchscript")
    manifest = {**made.manifest, "name": "bad", "version": "1", **change}
    before = _store_files(app)
    response = await upload(client, admin, "bad", "1", made.archive.read_bytes(), manifest)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["code"] == code
    assert _store_files(app) == before
    listing = await client.get("/admin/models", headers=bearer(admin))
    assert "bad" not in {m["name"] for m in listing.json()["data"]}


async def test_upload_needs_the_admin_scope_and_multipart(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    developer = await make_key(app, "dev-upload")
    denied = await client.post(
        "/admin/models/x/versions/1", files={"archive": ("a", b"x")}, headers=bearer(developer)
    )
    assert denied.status_code == 403
    not_multipart = await client.post(
        "/admin/models/x/versions/1", json={"archive": "x"}, headers=bearer(admin)
    )
    assert not_multipart.status_code == 400
    assert not_multipart.json()["error"]["type"] == "bad_request"


async def test_an_archive_over_the_limit_is_413(
    settings: Any, clock: ManualClock, loaded_modules: Any, tmp_path: Path
) -> None:
    from app.main import create_app
    from tests.conftest import make_settings

    small = make_settings(settings.database_url, max_archive_bytes=1024)
    application = create_app(small, clock=clock, modules=loaded_modules)
    async with application.router.lifespan_context(application):
        key = await make_key(application, "ops-413", (Scope.admin,))
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            made = write_mlp(tmp_path, "torchscript")
            manifest = {**made.manifest, "name": "big", "version": "1"}
            response = await upload(client, key, "big", "1", made.archive.read_bytes(), manifest)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "archive_too_large"
