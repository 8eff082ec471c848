"""Admins manage customers and keys; every write leaves an audit entry; secrets are shown
once and never listed, logged or audited."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI

from app.keys.schemas import CreatedKey, Scope
from tests.conftest import bearer, make_key

ROW = {"inputs": [0.1] * 10}


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


async def _predict(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await client.post("/v1/models/linreg/predict", json=ROW, headers=bearer(secret))


async def test_customer_lifecycle_and_suspension(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    created = await client.post(
        "/admin/customers", json={"name": "Acme", "email": "a@acme.io"}, headers=bearer(admin)
    )
    assert created.status_code == 201, created.text
    customer = created.json()
    assert (
        await client.post("/admin/customers", json={"name": "Acme"}, headers=bearer(admin))
    ).status_code == 409
    assert (
        await client.post(
            "/admin/customers", json={"name": "X", "email": "nope"}, headers=bearer(admin)
        )
    ).status_code == 422
    updated = await client.patch(
        f"/admin/customers/{customer['id']}",
        json={"email": "billing@acme.io"},
        headers=bearer(admin),
    )
    assert updated.json()["email"] == "billing@acme.io"

    key = (
        await client.post(
            "/admin/keys",
            json={"customer_id": customer["id"], "scopes": ["predict"]},
            headers=bearer(admin),
        )
    ).json()
    assert (await _predict(client, key["secret"])).status_code == 200

    suspended = await client.post(
        f"/admin/customers/{customer['id']}/suspend", headers=bearer(admin)
    )
    assert suspended.json()["status"] == "suspended"
    await asyncio.sleep(app.state.settings.key_cache_ttl_s + 0.05)
    denied = await _predict(client, key["secret"])
    assert denied.status_code == 403
    assert denied.json()["error"]["type"] == "customer_suspended"
    listing = (
        await client.get("/admin/customers", params={"status": "suspended"}, headers=bearer(admin))
    ).json()["data"]
    assert [c["name"] for c in listing] == ["Acme"]

    await client.post(f"/admin/customers/{customer['id']}/reactivate", headers=bearer(admin))
    await asyncio.sleep(app.state.settings.key_cache_ttl_s + 0.05)
    assert (await _predict(client, key["secret"])).status_code == 200
    assert (await client.get("/admin/customers/999999", headers=bearer(admin))).status_code == 404

    audit = (
        await client.get("/admin/audit", params={"target_type": "customer"}, headers=bearer(admin))
    ).json()["data"]
    assert [e["action"] for e in audit] == [
        "customer.reactivate",
        "customer.suspend",
        "customer.update",
        "customer.create",
    ]
    assert audit[1]["before"]["status"] == "active" and audit[1]["after"]["status"] == "suspended"
    assert all(e["actor"] == f"key:{admin.key_id}" for e in audit)


async def test_keys_are_listed_without_secrets_and_audited_without_them(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey, caplog: pytest.LogCaptureFixture
) -> None:
    customer = (
        await client.post("/admin/customers", json={"name": "Beta"}, headers=bearer(admin))
    ).json()
    with caplog.at_level(logging.DEBUG):
        made = await client.post(
            "/admin/keys",
            json={
                "customer_id": customer["id"],
                "scopes": ["predict", "finance"],
                "allowed_models": ["linreg"],
                "requests_per_minute": 100,
            },
            headers=bearer(admin),
        )
        assert made.status_code == 201
        key = made.json()
        secret = key["secret"]
        assert secret.startswith(key["prefix"]) and secret.endswith(key["last_four"])
        await _predict(client, secret)
    listed = await client.get(
        "/admin/keys", params={"customer_id": customer["id"]}, headers=bearer(admin)
    )
    one = await client.get(f"/admin/keys/{key['id']}", headers=bearer(admin))
    audit = await client.get("/admin/audit", headers=bearer(admin))
    for response in (listed, one, audit):
        assert response.status_code == 200
        assert secret not in response.text
        assert '"secret"' not in response.text
    assert secret not in caplog.text
    assert listed.json()["data"][0]["scopes"] == ["finance", "predict"]
    missing = await client.post(
        "/admin/keys", json={"customer_id": 999999, "scopes": ["predict"]}, headers=bearer(admin)
    )
    assert missing.status_code == 404
    bad_scope = await client.post(
        "/admin/keys",
        json={"customer_id": customer["id"], "scopes": ["root"]},
        headers=bearer(admin),
    )
    assert bad_scope.status_code == 422


async def test_revocation_takes_effect_within_a_second(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    key = await make_key(app, "gamma")
    assert (await _predict(client, key.secret)).status_code == 200  # now cached
    revoked = await client.post(f"/admin/keys/{key.key_id}/revoke", headers=bearer(admin))
    assert revoked.json()["revoked_at"] is not None
    await asyncio.sleep(1.0)
    response = await _predict(client, key.secret)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "key_revoked"


async def test_rotation_keeps_the_old_secret_until_the_grace_ends(
    app: FastAPI, client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    key = await make_key(app, "delta")
    rotated = await client.post(
        f"/admin/keys/{key.key_id}/rotate", json={"grace_seconds": 2}, headers=bearer(admin)
    )
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    new_secret = body["new"]["secret"]
    assert body["old"]["replaced_by"] == body["new"]["id"]
    assert (await _predict(client, new_secret)).status_code == 200
    assert (await _predict(client, key.secret)).status_code == 200  # still in grace
    await asyncio.sleep(2.0 + app.state.settings.key_cache_ttl_s + 0.1)
    assert (await _predict(client, key.secret)).status_code == 401
    assert (await _predict(client, new_secret)).status_code == 200
    again = await client.post(f"/admin/keys/{key.key_id}/rotate", json={}, headers=bearer(admin))
    assert again.status_code == 409
    entry = (
        await client.get("/admin/audit", params={"action": "key.rotate"}, headers=bearer(admin))
    ).json()["data"][0]
    assert entry["after"]["new_key_id"] == body["new"]["id"]
    assert new_secret not in str(entry)
