"""The operator's staff and its customers are different principals: only keys of the
operator account may hold admin or finance, whoever issues them; keys the migration left
with those scopes on a customer (legacy staff) keep working, are shown as such, warned about
at start-up, and lose them when re-issued."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text

from app.clock import ManualClock
from app.config import Settings
from app.inference.predictor import LoadedModules
from app.keys.schemas import CreatedKey, Scope
from app.main import create_app
from tests.conftest import bearer, make_key


@pytest.fixture
async def ops(app: FastAPI) -> CreatedKey:
    return await make_key(app, "operator", (Scope.admin,))


def _audit(pg_sync: Engine) -> list[tuple[str, str, object]]:
    with pg_sync.connect() as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute(
                text("SELECT action, target_id, after FROM audit_log ORDER BY id")
            )
        ]


async def test_only_the_operator_accounts_keys_may_hold_admin_or_finance(
    client: httpx.AsyncClient, ops: CreatedKey, pg_sync: Engine
) -> None:
    acme = (
        await client.post("/admin/customers", json={"name": "acme"}, headers=bearer(ops))
    ).json()
    assert acme["is_operator"] is False
    for scopes in (["admin"], ["finance"], ["predict", "finance"], ["billing", "admin"]):
        refused = await client.post(
            "/admin/keys", json={"customer_id": acme["id"], "scopes": scopes}, headers=bearer(ops)
        )
        assert refused.status_code == 422, scopes
        error = refused.json()["error"]
        assert error["type"] == "operator_only_scope"
        assert "only keys of the operator account" in error["message"]
        assert "tollgate keys create --operator" in error["message"]
    # Nothing written: no key, no audit entry for a refused one.
    keys = (await client.get("/admin/keys", headers=bearer(ops))).json()["data"]
    assert [k["customer_id"] for k in keys] == [ops.customer_id]
    assert [a for a, _, _ in _audit(pg_sync)] == ["customer.create"]

    customer_key = await client.post(
        "/admin/keys",
        json={"customer_id": acme["id"], "scopes": ["predict", "billing"]},
        headers=bearer(ops),
    )
    assert customer_key.status_code == 201, customer_key.text
    staff_key = await client.post(
        "/admin/keys",
        json={"customer_id": ops.customer_id, "scopes": ["finance"]},
        headers=bearer(ops),
    )
    assert staff_key.status_code == 201, staff_key.text
    listed = (await client.get("/admin/customers", headers=bearer(ops))).json()["data"]
    assert {c["name"]: c["is_operator"] for c in listed} == {"operator": True, "acme": False}


async def test_legacy_staff_keys_are_shown_and_listed_for_re_issue(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey
) -> None:
    legacy = await make_key(app, "acme", (Scope.admin,), legacy_staff=True)
    keys = (await client.get("/admin/keys", headers=bearer(ops))).json()["data"]
    assert {k["id"]: k["legacy_staff"] for k in keys} == {ops.key_id: False, legacy.key_id: True}
    only = await client.get("/admin/keys", params={"legacy_staff": "true"}, headers=bearer(ops))
    assert [k["prefix"] for k in only.json()["data"]] == [legacy.prefix]
    # It still works as admin (grandfathered), and the operator's own key is no legacy one.
    assert (await client.get("/admin/keys", headers=bearer(legacy))).status_code == 200


async def test_re_issuing_a_legacy_key_drops_or_refuses_the_staff_scopes(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey, pg_sync: Engine
) -> None:
    mixed = await make_key(app, "acme", (Scope.predict, Scope.admin), legacy_staff=True)
    rotated = await client.post(f"/admin/keys/{mixed.key_id}/rotate", json={}, headers=bearer(ops))
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["new"]
    assert (new["scopes"], new["legacy_staff"], new["customer_id"]) == (
        ["predict"],
        False,
        mixed.customer_id,
    )
    assert (await client.get("/admin/keys", headers=bearer(new["secret"]))).status_code == 403
    (rotation,) = [after for action, _, after in _audit(pg_sync) if action == "key.rotate"]
    assert rotation["dropped_scopes"] == ["admin"]  # type: ignore[index]

    staff_only = await make_key(app, "acme", (Scope.finance,), legacy_staff=True)
    refused = await client.post(
        f"/admin/keys/{staff_only.key_id}/rotate", json={}, headers=bearer(ops)
    )
    assert refused.status_code == 409
    assert refused.json()["error"]["type"] == "legacy_staff_key"
    assert "tollgate keys create --operator" in refused.json()["error"]["message"]

    # A key of the operator account keeps its staff scopes when rotated.
    own = await client.post(f"/admin/keys/{ops.key_id}/rotate", json={}, headers=bearer(ops))
    assert own.json()["new"]["scopes"] == ["admin"]


async def test_startup_warns_about_working_legacy_staff_keys(
    app: FastAPI,
    settings: Settings,
    clock: ManualClock,
    loaded_modules: LoadedModules,
    caplog: pytest.LogCaptureFixture,
    pg_sync: Engine,
) -> None:
    first = await make_key(app, "acme", (Scope.admin,), legacy_staff=True)
    second = await make_key(app, "globex", (Scope.finance,), legacy_staff=True)
    revoked = await make_key(app, "initech", (Scope.finance,), legacy_staff=True)
    await make_key(app, "operator", (Scope.admin,))  # the operator's: no warning
    with pg_sync.begin() as conn:
        conn.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": revoked.key_id}
        )
    caplog.set_level(logging.WARNING, logger="tollgate")
    again = create_app(settings, clock=clock, modules=loaded_modules)
    async with again.router.lifespan_context(again):
        pass
    (warning,) = [r for r in caplog.records if "legacy staff keys" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith("2 API key(s)")
    assert first.prefix in message and second.prefix in message
    assert revoked.prefix not in message
    assert "re-issue them to the operator account" in message
