"""Bad input never hurts: each case is a clear 4xx with a machine-readable error, never a
500, and is recorded in the ledger as a non-billable row."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.keys.schemas import Scope
from app.resources import resources
from tests.conftest import bearer, ledger, make_key

ROW = [0.1] * 10
IMAGE = [[[0.5] * 28 for _ in range(28)] for _ in range(3)]


@pytest.mark.parametrize(
    ("model", "content", "status", "error_type"),
    [
        ("linreg", b"{not json", 400, "invalid_json"),
        ("linreg", b"", 400, "invalid_json"),
        ("linreg", b'{"inputs": [NaN, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', 400, "invalid_json"),
        ("linreg", b'{"inputs": [Infinity, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', 400, "invalid_json"),
        ("linreg", b"[1, 2, 3]", 422, "invalid_tensor"),
        ("linreg", b'{"input": [1]}', 422, "invalid_tensor"),
        ("linreg", b'{"inputs": [1, 2, 3]}', 422, "invalid_tensor"),
        ("linreg", b'{"inputs": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2]]}', 422, "invalid_tensor"),
        (
            "linreg",
            b'{"inputs": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]}',
            422,
            "invalid_tensor",
        ),
        (
            "linreg",
            b'{"inputs": [true, false, true, true, true, true, true, true, true, true]}',
            422,
            "invalid_tensor",
        ),
        ("linreg", b'{"inputs": [null, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', 422, "invalid_tensor"),
        ("linreg", b'{"inputs": [1e39, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', 422, "invalid_tensor"),
        ("linreg", b'{"inputs": [1e400, 1, 1, 1, 1, 1, 1, 1, 1, 1]}', 400, "invalid_json"),
        ("linreg", b'{"inputs": []}', 422, "invalid_tensor"),
        ("linreg", b'{"inputs": {"a": 1}}', 422, "invalid_tensor"),
        ("linreg", b'{"inputs": 5}', 422, "invalid_tensor"),
        ("cnn", b'{"inputs": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}', 422, "invalid_tensor"),
        ("no-such-model", b'{"inputs": [1]}', 404, "model_not_found"),
    ],
)
async def test_bad_input_matrix(
    app: FastAPI,
    client: httpx.AsyncClient,
    model: str,
    content: bytes,
    status: int,
    error_type: str,
) -> None:
    key = await make_key(app)
    response = await client.post(
        f"/v1/models/{model}/predict",
        content=content,
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    rows = await ledger(app)
    assert [(r.status_code, r.billable, r.items) for r in rows] == [(status, False, 0)]
    assert rows[0].request_id == response.headers["x-request-id"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-garbage"])
async def test_compressed_body_is_415_not_parsed_as_plain(
    app: FastAPI, client: httpx.AsyncClient, encoding: str
) -> None:
    key = await make_key(app)
    response = await client.post(
        "/v1/models/linreg/predict",
        json={"inputs": ROW},  # plain JSON, labelled as compressed: refused, not guessed at
        headers={**bearer(key), "Content-Encoding": encoding},
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"]["type"] == "unsupported_content_encoding"
    assert encoding in response.json()["error"]["message"]
    rows = await ledger(app)
    assert [(r.status_code, r.billable) for r in rows] == [(415, False)]
    identity = await client.post(
        "/v1/models/linreg/predict",
        json={"inputs": ROW},
        headers={**bearer(key), "Content-Encoding": "identity"},
    )
    assert identity.status_code == 200


async def test_wrong_image_shape_says_what_was_expected(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    key = await make_key(app)
    wrong = [[[0.5] * 27 for _ in range(28)] for _ in range(3)]
    response = await client.post(
        "/v1/models/cnn/predict", json={"inputs": wrong}, headers=bearer(key)
    )
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details == {"expected_item_shape": [3, 28, 28], "got": [3, 28, 27]}


async def test_batch_over_the_limit_is_413(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    limit = resources(app).settings.max_batch_items
    response = await client.post(
        "/v1/models/linreg/predict", json={"inputs": [ROW] * (limit + 1)}, headers=bearer(key)
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "batch_too_large"
    at_limit = await client.post(
        "/v1/models/linreg/predict", json={"inputs": [ROW] * limit}, headers=bearer(key)
    )
    assert at_limit.status_code == 200


async def test_body_over_the_limit_is_413(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    limit = resources(app).settings.max_body_bytes
    huge = b'{"inputs": [' + b"0.5," * (limit // 4) + b"0.5]}"
    response = await client.post(
        "/v1/models/cnn/predict",
        content=huge,
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"


async def test_chunked_body_over_the_limit_is_413(app: FastAPI, client: httpx.AsyncClient) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    key = await make_key(app)
    limit = resources(app).settings.max_body_bytes

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"inputs": ['
        for _ in range(limit // 65536 + 2):
            yield b"0.5," * 16384
        yield b"0.5]}"

    response = await client.post(
        "/v1/models/cnn/predict",
        content=chunks(),
        headers={**bearer(key), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"
    rows = await ledger(app)
    assert [(r.status_code, r.billable) for r in rows] == [(413, False)]


async def test_chunked_body_over_the_limit_is_413_on_admin_routes_too(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The framework parses admin bodies itself; the limit still answers 413, not its 400."""
    admin = await make_key(app, "ops", (Scope.admin,))
    limit = resources(app).settings.max_body_bytes

    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(
        "/admin/customers",
        content=chunks(),
        headers={**bearer(admin), "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "body_too_large"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    wrong_method = await client.get("/v1/models/cnn/predict")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "method_not_allowed"


async def test_image_happy_path_for_contrast(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await make_key(app)
    response = await client.post(
        "/v1/models/cnn/predict", json={"inputs": IMAGE}, headers=bearer(key)
    )
    assert response.status_code == 200
    assert response.json()["outputs"][0]["label"] in [str(i) for i in range(10)]
