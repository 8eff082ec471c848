"""The auth matrix: every way a key can be wrong gets the right 401/403, and no prediction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.auth.secrets import generate_key
from app.clock import ManualClock
from app.keys.schemas import Scope
from tests.conftest import bearer, ledger, make_key

ROW = [0.01 * i for i in range(10)]


async def _predict(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/v1/models/linreg/predict", json={"inputs": ROW}, headers=headers)


@pytest.mark.parametrize(
    ("headers", "error_type"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
        ({"Authorization": "Bearer"}, "missing_api_key"),
        ({"Authorization": "Bearer not-a-key"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {generate_key()}"}, "invalid_api_key"),
    ],
)
async def test_missing_or_unknown_key_is_401_and_not_metered(
    app: FastAPI, client: httpx.AsyncClient, headers: dict[str, str], error_type: str
) -> None:
    response = await _predict(client, headers)
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["type"] == error_type
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert "outputs" not in body
    assert await ledger(app) == []


async def test_valid_key_predicts(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    response = await _predict(client, bearer(key))
    assert response.status_code == 200, response.text
    assert len(response.json()["outputs"]) == 1


async def test_revoked_key_is_401(app: FastAPI, client: httpx.AsyncClient, pg_sync: object) -> None:
    key = await make_key(app)
    assert (await _predict(client, bearer(key))).status_code == 200
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE prefix = :p"), {"p": key.prefix}
        )
    app.state.authenticator.forget_all()
    response = await _predict(client, bearer(key))
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "key_revoked"


async def test_expired_key_is_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    response = await _predict(client, bearer(key))
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "key_expired"


async def test_key_expiring_later_works(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app, expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert (await _predict(client, bearer(key))).status_code == 200


@pytest.mark.parametrize("scopes", [(Scope.admin,), (Scope.finance,), (Scope.admin, Scope.finance)])
async def test_key_without_predict_scope_is_403_and_metered_unbillable(
    app: FastAPI, client: httpx.AsyncClient, scopes: tuple[Scope, ...]
) -> None:
    key = await make_key(app, "ops", scopes)
    response = await _predict(client, bearer(key))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "insufficient_scope"
    rows = await ledger(app)
    assert [(r.status_code, r.billable) for r in rows] == [(403, False)]


async def test_suspended_customer_is_403(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app, "lapsed")
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE customers SET status = 'suspended'"))
    response = await _predict(client, bearer(key))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "customer_suspended"


async def test_key_restricted_to_other_models_is_403(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app, allowed_models=["cnn"])
    response = await _predict(client, bearer(key))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "model_not_allowed"


async def test_keys_are_stored_only_as_hmac(app: FastAPI, pg_sync: object) -> None:
    key = await make_key(app)
    async with app.state.sessionmaker() as session:
        row = (await session.execute(text("SELECT * FROM api_keys"))).mappings().one()
    assert key.secret.startswith("tg_") and len(key.secret) >= 3 + 22  # >= 128 bits of base62
    assert key.secret not in {str(v) for v in row.values()}
    assert len(row["hash"]) == 64 and row["prefix"] == key.secret[:11]


async def test_revocation_is_seen_after_the_cache_ttl(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """No manual cache flush: the 1 s TTL alone makes the revocation effective."""
    key = await make_key(app)
    assert (await _predict(client, bearer(key))).status_code == 200
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE api_keys SET revoked_at = now()"))
    clock.advance(seconds=app.state.settings.key_cache_ttl_s)
    assert (await _predict(client, bearer(key))).status_code == 401


async def test_last_used_at_is_kept_without_a_write_per_request(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)

    async def last_used() -> object:
        async with app.state.sessionmaker() as session:
            return (
                await session.execute(
                    text("SELECT last_used_at FROM api_keys WHERE id = :id"), {"id": key.key_id}
                )
            ).scalar()

    for _ in range(5):
        assert (await _predict(client, bearer(key))).status_code == 200
    assert await last_used() is None  # nothing written on the request path
    assert await app.state.last_used.flush() == 1  # one key, one batched write
    first = await last_used()
    assert first is not None
    assert await app.state.last_used.flush() == 0  # nothing new: no write
    await _predict(client, bearer(key))
    await app.state.last_used.flush()
    assert await last_used() >= first  # type: ignore[operator]
