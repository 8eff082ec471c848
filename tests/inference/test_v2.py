"""Open Inference Protocol V2 (/v2): a real V2 client (tritonclient, default settings) over
real HTTP against the service run by uvicorn, plus hand-written requests for the errors."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.http as triton
import uvicorn
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from app.keys.schemas import Scope
from app.main import create_app
from models.data import digits_split
from models.manifest import discover, load_weights
from tests.conftest import bearer, ledger, make_key, make_settings
from tests.paths import REPO_ROOT

HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def server(pg_url: str) -> Iterator[str]:
    """The service over real HTTP on a free loopback port (uvicorn in a thread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(make_settings(pg_url)), lifespan="on", log_level="warning", loop="asyncio"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """32 held-out digit images and the offline model's logits for them."""
    _, test = digits_split()
    x = test.x[:32].numpy()
    for mdir, manifest in discover(REPO_ROOT / "models"):
        if manifest.name == "cnn" and getattr(manifest, "variant", None) is None:
            with torch.inference_mode():
                return x, load_weights(mdir, manifest)(torch.from_numpy(x)).numpy()
    raise AssertionError("no shipped cnn")


def _client(server: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server)


def _binary_body(
    array: np.ndarray,
    datatype: str,
    *,
    name: str = "image",
    extra: dict[str, Any] | None = None,
    size: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = array.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ],
            **(extra or {}),
        }
    )
    return header + raw, {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


# -- tritonclient over HTTP ----------------------------------------------------------------


async def test_metadata_and_readiness_with_tritonclient(app: FastAPI, server: str) -> None:
    key = await make_key(app)
    c = _client(server)
    assert c.is_server_live()
    assert c.is_server_ready()
    meta = c.get_server_metadata()
    assert meta["name"] == "tollgate"
    assert meta["extensions"] == ["binary_tensor_data"]
    assert meta["version"]

    h = bearer(key)
    assert c.is_model_ready("cnn", headers=h)
    assert c.is_model_ready("cnn", "1", headers=h)
    assert not c.is_model_ready("nope", headers=h)
    assert not c.is_model_ready("cnn", "99", headers=h)
    assert not c.is_model_ready("cnn")  # no key

    cnn = c.get_model_metadata("cnn", headers=h)
    assert cnn["name"] == "cnn"
    assert "1" in cnn["versions"]
    assert cnn["platform"] == "pytorch"
    assert cnn["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 28, 28]}]
    assert cnn["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    assert c.get_model_metadata("cnn", "1", headers=h) == cnn
    linreg = c.get_model_metadata("linreg", headers=h)
    assert linreg["inputs"][0]["shape"] == [-1, 10]
    assert linreg["outputs"] == [{"name": "target", "datatype": "FP32", "shape": [-1, 1]}]

    with pytest.raises(InferenceServerException) as missing:
        c.get_model_metadata("nope", headers=h)
    assert missing.value.status() == "404"
    assert "nope" in missing.value.message()
    with pytest.raises(InferenceServerException) as anonymous:
        c.get_model_metadata("cnn")
    assert anonymous.value.status() == "401"
    c.close()


async def test_infer_binary_and_json_equal_offline(
    app: FastAPI, server: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, offline = digits
    key = await make_key(app)
    c = _client(server)

    # Defaults: binary input (set_data_from_numpy), no outputs named -> all outputs binary.
    binary_in = triton.InferInput("image", list(x.shape), "FP32")
    binary_in.set_data_from_numpy(x)
    result = c.infer("cnn", [binary_in], request_id="req-binary", headers=bearer(key))
    response = result.get_response()
    assert response["id"] == "req-binary"
    assert (response["model_name"], response["model_version"]) == ("cnn", "1")
    logits = result.get_output("logits")
    assert logits["parameters"]["binary_data_size"] == 32 * 10 * 4
    assert logits["shape"] == [32, 10]
    assert "data" not in logits
    np.testing.assert_allclose(result.as_numpy("logits"), offline, rtol=1e-4, atol=1e-4)
    labels = result.as_numpy("label")
    assert labels is not None
    assert [int(v) for v in labels] == offline.argmax(axis=1).tolist()

    # JSON input and a JSON output, versioned path.
    json_in = triton.InferInput("image", list(x.shape), "FP32")
    json_in.set_data_from_numpy(x, binary_data=False)
    result = c.infer(
        "cnn",
        [json_in],
        model_version="1",
        outputs=[triton.InferRequestedOutput("logits", binary_data=False)],
        request_id="req-json",
        headers=bearer(key),
    )
    assert result.get_response()["id"] == "req-json"
    assert [o["name"] for o in result.get_response()["outputs"]] == ["logits"]
    assert len(result.get_output("logits")["data"]) == 320
    np.testing.assert_allclose(result.as_numpy("logits"), offline, rtol=1e-4, atol=1e-4)

    # Other numeric datatypes are converted to float32.
    fp64_in = triton.InferInput("image", list(x.shape), "FP64")
    fp64_in.set_data_from_numpy(x.astype(np.float64))
    result = c.infer(
        "cnn", [fp64_in], outputs=[triton.InferRequestedOutput("logits")], headers=bearer(key)
    )
    np.testing.assert_allclose(result.as_numpy("logits"), offline, rtol=1e-4, atol=1e-4)
    assert result.get_output("label") is None
    c.close()

    rows = await ledger(app)
    assert [(r.endpoint, r.status_code, r.billable, r.items) for r in rows] == [
        ("v2.infer", 200, True, 32)
    ] * 3
    assert all(r.model == "cnn" and r.version == "1" for r in rows)


async def test_auth_failures_with_tritonclient(
    app: FastAPI, server: str, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = digits
    admin = await make_key(app, "operator", (Scope.admin,))
    linreg_only = await make_key(app, "narrow", allowed_models=["linreg"])
    c = _client(server)
    inp = triton.InferInput("image", [1, 3, 28, 28], "FP32")
    inp.set_data_from_numpy(x[:1])
    for headers, status in [
        (None, "401"),
        ({"Authorization": "Bearer tg_not_a_real_key"}, "401"),
        (bearer(admin), "403"),
        (bearer(linreg_only), "403"),
    ]:
        with pytest.raises(InferenceServerException) as exc:
            c.infer("cnn", [inp], headers=headers)
        assert exc.value.status() == status
        assert exc.value.message()
    c.close()
    rows = await ledger(app)  # authenticated failures are metered, non-billable
    assert (
        sorted((r.endpoint, r.status_code, r.billable) for r in rows)
        == [("v2.infer", 403, False)] * 2
    )


# -- hand-written requests (ASGI) ----------------------------------------------------------


async def test_nested_json_and_request_level_binary_output(
    app: FastAPI, client: httpx.AsyncClient, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, offline = digits
    h = bearer(await make_key(app))
    nested = {
        "id": "nested",
        "inputs": [
            {"name": "image", "shape": [2, 3, 28, 28], "datatype": "FP32", "data": x[:2].tolist()}
        ],
    }
    r = await client.post("/v2/models/cnn/infer", json=nested, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"] == "nested"
    assert body["model_name"] == "cnn"
    logits, label = body["outputs"]
    assert (logits["name"], logits["datatype"], logits["shape"]) == ("logits", "FP32", [2, 10])
    np.testing.assert_allclose(
        np.array(logits["data"]).reshape(2, 10), offline[:2], rtol=1e-4, atol=1e-4
    )
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": [str(i) for i in offline[:2].argmax(axis=1)],
    }

    # One item (the item shape, no batch dim), flat data, integer datatype.
    single = {"inputs": [{"name": "image", "shape": [3, 28, 28], "datatype": "UINT8"}]}
    single["inputs"][0]["data"] = [1] * (3 * 28 * 28)
    r = await client.post("/v2/models/cnn/versions/1/infer", json=single, headers=h)
    assert r.status_code == 200, r.text
    assert "id" not in r.json()
    assert r.json()["outputs"][0]["shape"] == [1, 10]

    # Request-level binary_data_output with hand-made binary input.
    content, headers = _binary_body(
        x[:4], "FP32", extra={"parameters": {"binary_data_output": True}}
    )
    r = await client.post("/v2/models/cnn/infer", content=content, headers={**h, **headers})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers[HEADER])
    header = orjson.loads(r.content[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes[0] == 4 * 10 * 4
    out = np.frombuffer(r.content[n : n + sizes[0]], dtype="<f4").reshape(4, 10)
    np.testing.assert_allclose(out, offline[:4], rtol=1e-4, atol=1e-4)
    first_label = r.content[n + sizes[0] :]
    (length,) = struct.unpack("<I", first_label[:4])
    assert first_label[4 : 4 + length].decode() == str(offline[0].argmax())
    assert len(r.content) == n + sum(sizes)
    assert "x-request-id" in r.headers
    assert all(row.endpoint == "v2.infer" and row.billable for row in await ledger(app))


def _json_body(**tensor: Any) -> dict[str, Any]:
    base = {"name": "image", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [0.5] * 2352}
    return {"inputs": [{**base, **tensor}]}


def _nan_body() -> tuple[bytes, dict[str, str]]:
    x = np.zeros((2, 3, 28, 28), dtype=np.float32)
    x[1, 0, 5, 5] = np.nan
    return _binary_body(x, "FP32")


async def test_errors_are_v2_shaped_4xx(app: FastAPI, client: httpx.AsyncClient) -> None:
    h = bearer(await make_key(app))
    zeros = np.zeros((1, 3, 28, 28), dtype=np.float32)
    too_many = np.zeros((app.state.settings.max_batch_items + 1, 3, 28, 28), dtype=np.float32)
    binary_ok, binary_headers = _binary_body(zeros, "FP32")
    cases: list[tuple[str, str, Any, dict[str, str], int, str]] = [
        ("bool", "cnn", _json_body(datatype="BOOL", data=[True] * 2352), {}, 400, "BOOL"),
        ("bytes", "cnn", _json_body(datatype="BYTES", data=["a"] * 2352), {}, 400, "BYTES"),
        ("unknown dtype", "cnn", _json_body(datatype="FP8"), {}, 400, "datatype"),
        ("wrong shape", "cnn", _json_body(shape=[3, 784], data=[0.5] * 2352), {}, 400, "shape"),
        ("shape vs data", "cnn", _json_body(shape=[2, 3, 28, 28]), {}, 400, "elements"),
        ("ragged", "cnn", _json_body(shape=[3], data=[[1.0], [1.0, 2.0]]), {}, 400, "regular"),
        ("strings", "cnn", _json_body(data=["x"] * 2352), {}, 400, "numbers"),
        ("float for int", "cnn", _json_body(datatype="INT32"), {}, 400, "integers"),
        ("int8 range", "cnn", _json_body(datatype="INT8", data=[300] * 2352), {}, 400, "range"),
        ("nan", "cnn", _nan_body(), {}, 400, "finite"),
        ("unknown model", "nope", _json_body(), {}, 404, "nope"),
        ("unknown version", "cnn/versions/99", _json_body(), {}, 404, "99"),
        ("malformed json", "cnn", b'{"inputs": [', {}, 400, "JSON"),
        ("empty body", "cnn", b"", {}, 400, "empty"),
        ("not an object", "cnn", [1, 2], {}, 400, "object"),
        ("no inputs", "cnn", {"inputs": []}, {}, 400, "inputs"),
        ("input name", "cnn", _json_body(name="pixels"), {}, 400, "pixels"),
        (
            "no data",
            "cnn",
            {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32"}]},
            {},
            400,
            "data",
        ),
        (
            "unknown output",
            "cnn",
            {**_json_body(), "outputs": [{"name": "probs"}]},
            {},
            400,
            "probs",
        ),
        ("bad id", "cnn", {**_json_body(), "id": 7}, {}, 400, "id"),
        ("header too long", "cnn", binary_ok, {**binary_headers, HEADER: "999999"}, 400, HEADER),
        ("header not int", "cnn", binary_ok, {**binary_headers, HEADER: "abc"}, 400, HEADER),
        ("header negative", "cnn", binary_ok, {**binary_headers, HEADER: "-1"}, 400, HEADER),
        # longer than Python's int() accepts from a string
        (
            "header 5000 digits",
            "cnn",
            binary_ok,
            {**binary_headers, HEADER: "9" * 5000},
            400,
            HEADER,
        ),
        (
            "empty but huge",  # zero elements, a dimension numpy cannot address
            "cnn",
            _json_body(shape=[0, 2**62], data=[]),
            {},
            400,
            "shape",
        ),
        (
            "65 dimensions",  # more than numpy can reshape to
            "cnn",
            _json_body(shape=[1] * 65, data=[0.5]),
            {},
            400,
            "dimensions",
        ),
        ("binary size", "cnn", _binary_body(zeros, "FP32", size=16), {}, 400, "binary_data_size"),
        ("trailing bytes", "cnn", (binary_ok + b"xx", binary_headers), {}, 400, "bytes"),
        ("batch too large", "cnn", _binary_body(too_many, "FP32"), {}, 413, "at most"),
        ("gzip", "cnn", _json_body(), {"Content-Encoding": "gzip"}, 415, "gzip"),
    ]
    metered = 0
    for name, model, payload, extra_headers, status, needle in cases:
        if isinstance(payload, tuple):
            content, headers = payload
        else:
            content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            headers = {"Content-Type": "application/json"}
        r = await client.post(
            f"/v2/models/{model}/infer", content=content, headers={**h, **headers, **extra_headers}
        )
        assert r.status_code == status, (name, r.status_code, r.text)
        body = r.json()
        assert list(body) == ["error"] and isinstance(body["error"], str), (name, body)
        assert needle in body["error"], (name, body)
        assert r.headers["x-request-id"]
        metered += 1

    rows = await ledger(app)
    assert len(rows) == metered  # every outcome after authentication is one row
    assert all(r.endpoint == "v2.infer" and not r.billable for r in rows)
    assert {r.status_code for r in rows} == {400, 404, 413, 415}


async def test_auth_and_metadata_errors_are_v2_shaped(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await make_key(app, "operator", (Scope.admin,))
    checks = [
        ("POST", "/v2/models/cnn/infer", {}, 401),
        ("POST", "/v2/models/cnn/infer", bearer("tg_nope"), 401),
        ("POST", "/v2/models/cnn/infer", bearer(admin), 403),
        ("GET", "/v2/models/cnn", {}, 401),
        ("GET", "/v2/models/nope", bearer(admin), 404),
        ("GET", "/v2/models/cnn/versions/99/ready", bearer(admin), 404),
        ("GET", "/v2/no/such/route", {}, 404),
    ]
    for method, path, headers, status in checks:
        r = await client.request(method, path, headers=headers, json=_json_body())
        assert r.status_code == status, (path, r.text)
        assert list(r.json()) == ["error"], (path, r.text)
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    ready = await client.get("/v2/models/cnn/ready", headers=bearer(admin))
    assert ready.json() == {"name": "cnn", "ready": True}
    # /v1 keeps its own error format.
    v1 = await client.get("/v1/models/nope", headers=bearer(admin))
    assert v1.json()["error"]["type"] == "model_not_found"
