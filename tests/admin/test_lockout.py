"""Admins cannot lock every admin out through the API: a key cannot suspend its own customer,
and the last working admin key cannot be revoked or expired (409). The CLI, run by whoever
holds the database, still can, and is how an operator recovers or does it on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.cli import cli
from app.clock import ManualClock
from app.config import get_settings
from app.keys.schemas import CreatedKey, Scope
from tests.conftest import TEST_SECRET, bearer, make_key


@pytest.fixture
async def ops(app: FastAPI) -> CreatedKey:
    return await make_key(app, "operator", (Scope.admin,))


def _audit_actions(pg_sync: Engine) -> list[str]:
    with pg_sync.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT action FROM audit_log ORDER BY id"))]


async def test_a_key_cannot_suspend_its_own_customer(
    client: httpx.AsyncClient, ops: CreatedKey, pg_sync: Engine
) -> None:
    response = await client.post(f"/admin/customers/{ops.customer_id}/suspend", headers=bearer(ops))
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "own_customer"
    assert "tollgate customers suspend" in response.json()["error"]["message"]
    # Nothing changed: the key still works, no audit row.
    listed = await client.get("/admin/customers", headers=bearer(ops))
    assert listed.status_code == 200
    assert {c["status"] for c in listed.json()["data"]} == {"active"}
    assert "customer.suspend" not in _audit_actions(pg_sync)


async def test_another_customer_can_be_suspended(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey
) -> None:
    other = await make_key(app, "acme")
    response = await client.post(
        f"/admin/customers/{other.customer_id}/suspend", headers=bearer(ops)
    )
    assert response.status_code == 200, response.text


async def test_the_last_working_admin_key_cannot_be_revoked_or_expired(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey, pg_sync: Engine
) -> None:
    for path, body in (("revoke", None), ("expire", {})):
        response = await client.post(
            f"/admin/keys/{ops.key_id}/{path}", json=body, headers=bearer(ops)
        )
        assert response.status_code == 409, (path, response.text)
        assert response.json()["error"]["type"] == "last_admin_key"
    assert (await client.get("/admin/keys", headers=bearer(ops))).status_code == 200
    assert not {"key.revoke", "key.expire"} & set(_audit_actions(pg_sync))

    # A later expiry is no lock-out: there is time to make another key.
    later = await client.post(
        f"/admin/keys/{ops.key_id}/expire",
        json={"expires_at": "2999-01-01T00:00:00Z"},
        headers=bearer(ops),
    )
    assert later.status_code == 200, later.text


async def test_with_a_second_admin_key_one_can_go_then_not_the_other(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey
) -> None:
    second = await make_key(app, "operator", (Scope.admin, Scope.finance))
    revoked = await client.post(f"/admin/keys/{ops.key_id}/revoke", headers=bearer(ops))
    assert revoked.status_code == 200, revoked.text  # its own key: another admin remains
    last = await client.post(f"/admin/keys/{second.key_id}/revoke", headers=bearer(second))
    assert last.status_code == 409
    assert last.json()["error"]["type"] == "last_admin_key"


async def test_admin_keys_that_cannot_work_do_not_count(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey, clock: ManualClock
) -> None:
    """An admin key of a suspended customer, or one already expired, is no way back in."""
    elsewhere = await make_key(app, "other-ops", (Scope.admin,), legacy_staff=True)
    await make_key(  # expires in 5 minutes
        app, "operator", (Scope.admin,), expires_at=clock.now() + timedelta(minutes=5)
    )
    suspended = await client.post(
        f"/admin/customers/{elsewhere.customer_id}/suspend", headers=bearer(ops)
    )
    assert suspended.status_code == 200
    clock.advance(timedelta(minutes=10))
    assert (
        await client.post(f"/admin/keys/{ops.key_id}/revoke", headers=bearer(ops))
    ).status_code == 409


async def test_the_operator_account_cannot_be_suspended_through_the_api(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey, pg_sync: Engine
) -> None:
    """Not even by a legacy staff key of another customer, which the own-customer rule
    does not stop: every operator key would stop working."""
    legacy = await make_key(app, "acme", (Scope.admin,), legacy_staff=True)
    response = await client.post(
        f"/admin/customers/{ops.customer_id}/suspend", headers=bearer(legacy)
    )
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "operator_account"
    assert "tollgate customers suspend" in response.json()["error"]["message"]
    assert (await client.get("/admin/keys", headers=bearer(ops))).status_code == 200
    assert "customer.suspend" not in _audit_actions(pg_sync)


async def test_an_admin_scope_that_does_not_count_is_no_way_back_in(
    app: FastAPI, client: httpx.AsyncClient, ops: CreatedKey, pg_sync: Engine
) -> None:
    """A customer's key whose row says admin (not the operator's, not legacy) cannot act as
    admin, so it does not keep the last operator admin key revocable."""
    customer = await make_key(app, "acme")
    with pg_sync.begin() as conn:
        conn.execute(
            text("UPDATE api_keys SET scopes = '[\"admin\"]' WHERE id = :id"),
            {"id": customer.key_id},
        )
    denied = await client.get("/admin/keys", headers=bearer(customer))
    assert denied.status_code == 403
    assert "operator account" in denied.json()["error"]["message"]
    last = await client.post(f"/admin/keys/{ops.key_id}/revoke", headers=bearer(ops))
    assert last.status_code == 409
    assert last.json()["error"]["type"] == "last_admin_key"


@pytest.fixture
def run_cli(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("TOLLGATE_ENV", "test")
    monkeypatch.setenv("TOLLGATE_DATABASE_URL", pg_url)
    monkeypatch.setenv("TOLLGATE_SECRET_KEY", TEST_SECRET)
    get_settings.cache_clear()
    try:
        yield CliRunner()
    finally:
        get_settings.cache_clear()


async def test_the_cli_can_do_both_on_purpose(
    client: httpx.AsyncClient, ops: CreatedKey, run_cli: CliRunner, pg_sync: Engine
) -> None:
    for args in (
        ["keys", "revoke", ops.prefix],
        ["customers", "suspend", str(ops.customer_id)],
    ):
        result = await asyncio.to_thread(run_cli.invoke, cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
    assert (await client.get("/admin/keys", headers=bearer(ops))).status_code == 401
    assert {"key.revoke", "customer.suspend"} <= set(_audit_actions(pg_sync))
