# ruff: noqa: E501  (a table of requests, one per line)
"""The hot path (app/inference/hot.py) answers exactly like the framework routes.

The same requests go to one app with the hot path and one without; status, body (less the
request id), headers and the ledger row must match. A spy confirms which requests the hot
path served and which it left to the framework.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.inference.predictor import LoadedModules
from app.main import Tollgate, create_app
from tests.conftest import bearer, ledger, make_key, make_settings

ROW = [0.1] * 10
IMAGE = [[[0.5] * 28 for _ in range(28)] for _ in range(3)]
KEY = "{key}"  # replaced by the test's key


def _binary_v2(values: list[float]) -> tuple[bytes, dict[str, str]]:
    raw = struct.pack(f"<{len(values)}f", *values)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [1, len(values)],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "target", "parameters": {"binary_data": False}}],
        }
    )
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


_BINARY, _BINARY_HEADERS = _binary_v2(ROW)

# (name, method, path, body, extra headers, authenticated, served by the hot path)
CASES: list[tuple[str, str, str, bytes, dict[str, str], bool, bool]] = [
    ("v1 linreg", "POST", "/v1/models/linreg/predict", orjson.dumps({"inputs": ROW}), {}, True, True),
    ("v1 cnn batch", "POST", "/v1/models/cnn/predict", orjson.dumps({"inputs": [IMAGE, IMAGE]}), {}, True, True),
    ("v1 version", "POST", "/v1/models/linreg/predict?version=1", orjson.dumps({"inputs": ROW}), {}, True, True),
    ("v1 unknown version", "POST", "/v1/models/linreg/predict?version=9", orjson.dumps({"inputs": ROW}), {}, True, True),
    ("v1 bad json", "POST", "/v1/models/linreg/predict", b"{nope", {}, True, True),
    ("v1 NaN", "POST", "/v1/models/linreg/predict", b'{"inputs": [NaN,1,1,1,1,1,1,1,1,1]}', {}, True, True),
    ("v1 shape", "POST", "/v1/models/linreg/predict", orjson.dumps({"inputs": [1, 2]}), {}, True, True),
    ("v1 unknown model", "POST", "/v1/models/nope/predict", orjson.dumps({"inputs": ROW}), {}, True, True),
    ("v1 no key", "POST", "/v1/models/linreg/predict", orjson.dumps({"inputs": ROW}), {}, False, True),
    ("v1 bad key", "POST", "/v1/models/linreg/predict", orjson.dumps({"inputs": ROW}), {"Authorization": "Bearer tg_wrong"}, False, True),
    ("v1 name too long", "POST", "/v1/models/" + "m" * 129 + "/predict", orjson.dumps({"inputs": ROW}), {}, True, False),
    ("v1 version too long", "POST", "/v1/models/linreg/predict?version=" + "9" * 33, orjson.dumps({"inputs": ROW}), {}, True, False),
    ("v1 other query", "POST", "/v1/models/linreg/predict?x=1", orjson.dumps({"inputs": ROW}), {}, True, False),
    ("v1 GET", "GET", "/v1/models/linreg/predict", b"", {}, True, False),
    ("v1 too large", "POST", "/v1/models/linreg/predict", b"[" + b"1," * 3_000_000 + b"1]", {}, True, True),
    ("v2 json", "POST", "/v2/models/linreg/infer", orjson.dumps({"id": "a", "inputs": [{"name": "features", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}), {}, True, True),
    ("v2 version", "POST", "/v2/models/linreg/versions/1/infer", orjson.dumps({"inputs": [{"name": "features", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}), {}, True, True),
    ("v2 binary", "POST", "/v2/models/linreg/infer", _BINARY, _BINARY_HEADERS, True, True),
    ("v2 bad tensor", "POST", "/v2/models/linreg/infer", orjson.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}), {}, True, True),
    ("v2 unknown", "POST", "/v2/models/nope/infer", orjson.dumps({"inputs": []}), {}, True, True),
    ("v2 no key", "POST", "/v2/models/linreg/infer", orjson.dumps({"inputs": []}), {}, False, True),
]  # fmt: skip

_ANSWERED_BEFORE_AUTH = {"v1 name too long", "v1 version too long", "v1 GET", "v1 too large"}
_VARIABLE_HEADERS = {"x-request-id", "date", "content-length"}


class Spy:
    def __init__(self, app: Tollgate) -> None:
        assert app.hot_app is not None
        self.inner = app.hot_app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await self.inner(scope, receive, send)


@pytest.fixture
async def both(
    settings: Settings, loaded_modules: LoadedModules
) -> AsyncIterator[tuple[Tollgate, FastAPI]]:
    hot = create_app(settings, modules=loaded_modules)
    plain = create_app(make_settings(settings.database_url, hot_path=False), modules=loaded_modules)
    assert isinstance(hot, Tollgate) and hot.hot_app is not None
    assert isinstance(plain, Tollgate) and plain.hot_app is None
    async with (
        hot.router.lifespan_context(hot),
        plain.router.lifespan_context(plain),
    ):
        yield hot, plain


def _normal(response: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in _VARIABLE_HEADERS}
    try:
        body: Any = response.json()
    except ValueError:
        body = response.content
    if isinstance(body, dict):
        body.pop("request_id", None)
        if isinstance(body.get("error"), dict):
            body["error"].pop("request_id", None)
        usage = body.get("usage")
        if isinstance(usage, dict):
            usage.pop("compute_ms", None)  # measured time: differs run to run
    return response.status_code, body, headers


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_hot_path_answers_like_the_framework(
    both: tuple[Tollgate, FastAPI],
    case: tuple[str, str, str, bytes, dict[str, str], bool, bool],
) -> None:
    name, method, path, body, extra, authenticated, served_hot = case
    hot, plain = both
    spy = Spy(hot)
    hot.hot_app = spy
    key = await make_key(hot)
    headers = {"Content-Type": "application/json", **(bearer(key) if authenticated else {})}
    headers.update(extra)
    answers = []
    for app in (hot, plain):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.request(method, path, content=body, headers=headers)
        assert response.status_code < 500, response.text
        assert response.headers["x-request-id"]
        answers.append(_normal(response))
    assert answers[0] == answers[1]
    assert spy.paths == ([path.split("?")[0]] if served_hot else [])
    # Same ledger rows (both apps share the database): one per authenticated request.
    # Oversized bodies and framework validation errors are answered before authentication.
    rows = await ledger(hot)
    expected = 0 if not authenticated or name in _ANSWERED_BEFORE_AUTH else 2
    assert len(rows) == expected
    if rows:
        a, b = rows
        assert (a.status_code, a.billable, a.items, a.model, a.endpoint) == (
            b.status_code,
            b.billable,
            b.items,
            b.model,
            b.endpoint,
        )


async def test_access_log_line_per_hot_request(
    both: tuple[Tollgate, FastAPI], caplog: pytest.LogCaptureFixture
) -> None:
    hot, _ = both
    key = await make_key(hot)
    caplog.set_level("INFO", logger="tollgate.access")
    transport = httpx.ASGITransport(app=hot)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(
            "/v1/models/linreg/predict", json={"inputs": ROW}, headers=bearer(key)
        )
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "tollgate.access"]
    assert record.__dict__["request_id"] == response.headers["x-request-id"]
    assert record.__dict__["status"] == 200
    assert record.__dict__["path"] == "/v1/models/linreg/predict"
    assert key.secret not in str(record.__dict__)
