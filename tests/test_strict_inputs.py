"""Numbers, booleans and times are read strictly: a boolean is not a number, a number is not a
time, a key is not born expired, "-0" is zero, and a model's declared input range is
enforced (refused, not clipped)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text

from app.keys.schemas import CreatedKey, Scope
from tests.conftest import bearer, make_key

LINREG = [0.1] * 10


@pytest.fixture
async def admin(app: FastAPI) -> CreatedKey:
    return await make_key(app, "tollgate-ops", (Scope.admin,))


def _billable(pg_sync: Engine) -> int:
    with pg_sync.connect() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM usage_events WHERE billable")) or 0)


@pytest.mark.parametrize(
    "inputs",
    [
        [True, *LINREG[1:]],
        [[0.1] * 9 + [False]],
        [LINREG, [*LINREG[:5], True, *LINREG[6:]]],
    ],
)
async def test_booleans_are_not_numbers(
    client: httpx.AsyncClient, dev_key: CreatedKey, pg_sync: Engine, inputs: list[Any]
) -> None:
    response = await client.post(
        "/v1/models/linreg/predict", json={"inputs": inputs}, headers=bearer(dev_key)
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_tensor"
    assert "boolean" in response.json()["error"]["message"]
    assert _billable(pg_sync) == 0


async def test_a_number_field_named_true_is_still_fine(
    client: httpx.AsyncClient, dev_key: CreatedKey
) -> None:
    """The boolean scan looks for the token first; a body that merely contains it in a
    string (here an unknown field) is still read as numbers."""
    response = await client.post(
        "/v1/models/linreg/predict",
        json={"inputs": LINREG, "note": "true"},
        headers=bearer(dev_key),
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", [5.0, -0.01, 1.0001])
async def test_pixels_outside_the_declared_range_are_refused(
    client: httpx.AsyncClient, dev_key: CreatedKey, value: float
) -> None:
    image = np.full((3, 28, 28), 0.5)
    image[0, 0, 0] = value
    response = await client.post(
        "/v1/models/cnn/predict", json={"inputs": image.tolist()}, headers=bearer(dev_key)
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_tensor"
    assert error["details"]["range"] == [0.0, 1.0]


async def test_pixels_at_the_range_edges_are_served(
    client: httpx.AsyncClient, dev_key: CreatedKey
) -> None:
    image = np.zeros((3, 28, 28))
    image[1] = 1.0
    response = await client.post(
        "/v1/models/cnn/predict", json={"inputs": image.tolist()}, headers=bearer(dev_key)
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("end", ["0.5", "1700000000", "1e9", " 12 "])
async def test_a_number_is_not_a_time(
    client: httpx.AsyncClient, dev_key: CreatedKey, end: str
) -> None:
    response = await client.get("/v1/usage", params={"end": end}, headers=bearer(dev_key))
    assert response.status_code == 422, response.text
    assert "ISO 8601" in response.text
    ok = await client.get(
        "/v1/usage", params={"end": "2026-01-31T00:00:00Z"}, headers=bearer(dev_key)
    )
    assert ok.status_code == 200, ok.text


async def test_a_key_cannot_be_born_expired(
    client: httpx.AsyncClient, admin: CreatedKey, pg_sync: Engine
) -> None:
    response = await client.post(
        "/admin/keys",
        json={
            "customer_id": admin.customer_id,
            "scopes": ["predict"],
            "expires_at": "2020-01-01T00:00:00Z",
        },
        headers=bearer(admin),
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "expires_at_in_past"
    with pg_sync.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM api_keys")) == 1  # the admin's own


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"grace_seconds": True}, 422),
        ({"grace_seconds": "60"}, 422),
        ({"grace_seconds": 60.0}, 422),
        ({"grace_seconds": 60}, 200),
    ],
)
async def test_grace_seconds_is_a_whole_number(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: CreatedKey,
    body: dict[str, Any],
    status: int,
) -> None:
    key = await make_key(app, "acme")
    response = await client.post(
        f"/admin/keys/{key.key_id}/rotate", json=body, headers=bearer(admin)
    )
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "change",
    [
        {"requests_per_minute": True},
        {"requests_per_minute": "10"},
        {"customer_id": True},
        {"customer_id": 1.0},
    ],
)
async def test_counts_and_ids_are_not_booleans_or_fractions(
    client: httpx.AsyncClient, admin: CreatedKey, change: dict[str, Any]
) -> None:
    body = {"customer_id": admin.customer_id, "scopes": ["predict"], **change}
    response = await client.post("/admin/keys", json=body, headers=bearer(admin))
    assert response.status_code == 422, response.text


async def test_negative_zero_money_is_zero_and_booleans_are_not_money(
    client: httpx.AsyncClient, admin: CreatedKey
) -> None:
    created = await client.post(
        "/admin/plans",
        json={"name": "free", "currency": "usd", "base_fee": "-0", "spend_cap": "-0.00"},
        headers=bearer(admin),
    )
    assert created.status_code == 201, created.text
    current = created.json()["current"]
    assert current["base_fee"] == "0"
    assert current["spend_cap"] == "0"  # a plain decimal: significant digits only
    refused = await client.post(
        "/admin/plans",
        json={"name": "odd", "currency": "usd", "base_fee": True},
        headers=bearer(admin),
    )
    assert refused.status_code == 422, refused.text
