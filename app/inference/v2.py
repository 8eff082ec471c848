"""Open Inference Protocol V2 (KServe / Triton HTTP/REST) on the same keys, limits and
metering as ``/v1``.

Routes (``{v}`` is a model version; ``{m}`` a model, ``name`` or ``name:variant``):

* ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``: public, like
  ``/healthz`` and ``/readyz`` (probes carry no key).
* ``GET /v2/models/{m}[/versions/{v}]`` and ``.../ready``: any valid key, like
  ``GET /v1/models/{model}``.
* ``POST /v2/models/{m}[/versions/{v}]/infer``: the ``predict`` scope, metered through
  :meth:`InferenceService.run` with ``endpoint="v2.infer"``.

Tensors: JSON (``data`` flat or nested, row-major) or the ``binary_tensor_data`` extension
(``Inference-Header-Content-Length``). Numeric datatypes FP16/32/64, INT8-64 and UINT8-64
are accepted and converted to the model's float32; BOOL, BYTES and BF16 are refused.

Errors on ``/v2`` routes are ``{"error": "<message>"}``, as V2 clients (``tritonclient``)
expect, with the ``/v1`` status codes except that a bad tensor (``/v1``'s 422) is 400, as
Triton and KServe answer. So: 400 malformed request, header, JSON or tensor (wrong shape,
datatype, not finite, unknown output); 401/403 key or scope; 402/429 spend cap and rate
limits (with their headers); 404 unknown model or version; 413 batch or body too large;
415 compressed request bodies; 503 ledger unavailable. A body refused by its
``Content-Length`` alone is answered by the middleware before routing, in the ``/v1`` form.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field
from sqlalchemy import text
from starlette.responses import Response

from app.auth.deps import BEARER_SECURITY, ProtectedRoute, authenticate_request
from app.errors import AppError, BadRequest, Unprocessable, read_body
from app.inference.predictor import Array
from app.inference.registry import ModelRegistry, ServedModel
from app.inference.service import InferenceService

router = APIRouter(prefix="/v2", tags=["inference-v2"], route_class=ProtectedRoute)

HEADER_LENGTH = "Inference-Header-Content-Length"
PLATFORM = "pytorch"
LABEL_OUTPUT = "label"

_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
_REFUSED = ("BOOL", "BYTES", "BF16")
MAX_DIMS = 16  # numpy's limit is 64; no served model takes more than a few
# A longer Inference-Header-Content-Length is larger than any body (and int() of a very
# long digit string is refused by Python itself).
_MAX_LENGTH_DIGITS = 18


class V2BadRequest(BadRequest):
    type = "invalid_v2_request"


# -- schemas (OpenAPI only: bodies are parsed and rendered by hand) ---------------------


class V2Error(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 is the batch dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferInput(BaseModel):
    name: str
    shape: list[int] = Field(description="[n, *item_shape], or item_shape for one item")
    datatype: str = Field(description="FP16/FP32/FP64, INT8-64 or UINT8-64")
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size: this input's bytes in the binary part"
    )
    data: list[Any] | None = Field(default=None, description="Flat or nested, row-major")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data: return this output as raw bytes"
    )


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_output: every output as raw bytes"
    )
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[InferOutput]


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined (for ``openapi_extra``)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _errors(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": V2Error, "description": d} for code, d in described.items()}


_AUTH = {
    401: "Missing, invalid, expired or revoked API key",
    403: "The key lacks the scope or may not call the model, or the customer is suspended",
}
_MODEL_PATH = Annotated[str, Path(description="name or name:variant")]


# -- helpers ---------------------------------------------------------------------------


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code,
        headers=headers,
        media_type="application/json",
    )


def _error(exc: AppError) -> Response:
    status = 400 if exc.status_code == 422 else exc.status_code
    return _json({"error": exc.message}, status, exc.headers)


async def _answer(work: Awaitable[Response]) -> Response:
    """Render the app's errors in the V2 form; the status and headers are kept."""
    try:
        return await work
    except AppError as exc:
        return _error(exc)


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


def _metadata(served: ServedModel, registry: ModelRegistry, model: str) -> dict[str, Any]:
    m = served.manifest
    versions = list(dict.fromkeys(s.version for s in registry.list() if s.name == served.name))
    outputs = [{"name": t.name, "datatype": "FP32", "shape": [-1, *t.shape]} for t in m.outputs[:1]]
    if m.labels is not None and m.outputs[0].name != LABEL_OUTPUT:
        outputs.append({"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]})
    return {
        "name": model,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [
            {"name": t.name, "datatype": "FP32", "shape": [-1, *t.shape]} for t in m.inputs[:1]
        ],
        "outputs": outputs,
    }


def _output_names(served: ServedModel) -> list[str]:
    names = [served.manifest.outputs[0].name]
    if served.manifest.labels is not None and names[0] != LABEL_OUTPUT:
        names.append(LABEL_OUTPUT)
    return names


# -- request decoding ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    id: str | None
    outputs: list[tuple[str, bool]]  # (name, binary)


def _params(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise V2BadRequest(f"{where} must be a JSON object")
    return value


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise V2BadRequest(f"{where}.{key} must be true or false")
    return value


def _split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary tensor data (empty without the extension)."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    value = header_length.strip()
    if not (value.isascii() and value.isdigit()):
        raise V2BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    n = int(value) if len(value) <= _MAX_LENGTH_DIGITS else len(body) + 1
    if n > len(body):
        raise V2BadRequest(
            f"{HEADER_LENGTH} is {n} but the request body has only {len(body)} bytes"
        )
    return view[:n], view[n:]


def _from_json(data: Any, dtype: np.dtype[Any], where: str) -> npt.NDArray[Any]:
    if not isinstance(data, list):
        raise V2BadRequest(f"{where}: 'data' must be a (flat or nested) list of numbers")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError):
        raise V2BadRequest(
            f"{where}: 'data' must be a list of numbers with a regular (rectangular) shape"
        ) from None
    if raw.size and raw.dtype.kind not in "iuf":
        raise V2BadRequest(f"{where}: 'data' must hold only numbers")
    if dtype.kind in "iu" and raw.size:
        if raw.dtype.kind == "f":
            raise V2BadRequest(f"{where}: 'data' must hold integers for this datatype")
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise V2BadRequest(f"{where}: a value is out of range for this datatype")
    with np.errstate(over="ignore"):
        return raw.astype(dtype)


def _tensor(tensor: Any, binary: memoryview, offset: int) -> tuple[str, npt.NDArray[Any], int]:
    """One input tensor: its name, its array (declared dtype and shape), the new offset."""
    if not isinstance(tensor, dict):
        raise V2BadRequest("each input must be a JSON object with name, shape, datatype")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise V2BadRequest("each input needs a 'name' string")
    where = f"input '{name}'"
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise V2BadRequest(f"{where} needs a 'datatype' string")
    if datatype in _REFUSED:
        raise V2BadRequest(
            f"{where}: datatype {datatype} is not supported; send a numeric tensor "
            "(FP32, or FP16/FP64/INT*/UINT*, converted to FP32)"
        )
    dtype = _DATATYPES.get(datatype)
    if dtype is None:
        raise V2BadRequest(
            f"{where}: unknown datatype {datatype!r}; expected one of {', '.join(_DATATYPES)}"
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0
        for d in shape  # bool is not a dimension
    ):
        raise V2BadRequest(f"{where}: 'shape' must be a list of non-negative integers")
    if len(shape) > MAX_DIMS:
        raise V2BadRequest(f"{where}: 'shape' has {len(shape)} dimensions; at most {MAX_DIMS}")
    count = math.prod(shape)
    params = _params(tensor.get("parameters"), f"{where} parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise V2BadRequest(f"{where} has both 'data' and parameters.binary_data_size")
        if type(size) is not int or size < 0:
            raise V2BadRequest(f"{where}: binary_data_size must be a non-negative integer")
        expected = count * dtype.itemsize
        if size != expected:
            raise V2BadRequest(
                f"{where}: binary_data_size is {size} bytes but shape {shape} of {datatype} "
                f"needs {expected}"
            )
        if offset + size > len(binary):
            raise V2BadRequest(
                f"{where}: the binary data after the JSON header is {len(binary)} bytes, "
                f"shorter than the inputs' binary_data_size"
            )
        array: npt.NDArray[Any] = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        offset += size
    else:
        if "data" not in tensor:
            raise V2BadRequest(f"{where} has neither 'data' nor parameters.binary_data_size")
        array = _from_json(tensor["data"], dtype, where)
        if array.size != count:
            raise V2BadRequest(
                f"{where}: shape {shape} holds {count} elements but 'data' has {array.size}"
            )
    try:
        shaped = array.reshape(shape)
    except ValueError:  # e.g. an empty tensor with a dimension numpy cannot address
        raise V2BadRequest(f"{where}: shape {shape} cannot be formed") from None
    return name, shaped, offset


def _outputs(value: Any, params: dict[str, Any], served: ServedModel) -> list[tuple[str, bool]]:
    default = _flag(params, "binary_data_output", False, "parameters")
    available = _output_names(served)
    if value is None or value == []:
        return [(name, default) for name in available]
    if not isinstance(value, list):
        raise V2BadRequest("'outputs' must be a list of {name, parameters?} objects")
    selected: list[tuple[str, bool]] = []
    for out in value:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise V2BadRequest("each requested output needs a 'name' string")
        name = out["name"]
        if name not in available:
            raise V2BadRequest(
                f"model has no output '{name}'; its outputs are {', '.join(available)}"
            )
        if any(name == n for n, _ in selected):
            raise V2BadRequest(f"output '{name}' is requested twice")
        where = f"output '{name}' parameters"
        p = _params(out.get("parameters"), where)
        if p.get("classification"):
            raise V2BadRequest("the classification extension is not supported")
        if "binary_data" in p:
            binary = _flag(p, "binary_data", default, where)
        else:
            binary = _flag(p, "binary_data_output", default, where)
        selected.append((name, binary))
    return selected


def decode_request(
    body: bytes, header_length: str | None, served: ServedModel
) -> tuple[Array, _Request]:
    """The V2 request as the model's validated float32 batch, and what to answer with."""
    predictor = served.predictor
    assert predictor is not None
    header, binary = _split_body(body, header_length)
    if not len(header):
        raise V2BadRequest("the JSON inference header is empty; send a V2 inference request")
    try:
        payload = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise V2BadRequest(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise V2BadRequest("the inference request must be a JSON object")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise V2BadRequest("'id' must be a string")
    params = _params(payload.get("parameters"), "parameters")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2BadRequest("'inputs' must be a non-empty list of input tensors")
    expected = served.manifest.inputs[0].name
    if len(inputs) != 1:
        raise V2BadRequest(f"the model takes one input, '{expected}'; got {len(inputs)}")
    name, array, used = _tensor(inputs[0], binary, 0)
    if name != expected:
        raise V2BadRequest(f"the model has no input '{name}'; its input is '{expected}'")
    if used != len(binary):
        raise V2BadRequest(
            f"{len(binary) - used} bytes of binary data follow the inputs' binary_data_size"
        )
    outputs = _outputs(payload.get("outputs"), params, served)
    batch = predictor.decode(array)  # shape, batch size, finite; float32
    if not batch.flags.writeable:  # a view of the request body
        batch = batch.copy()
    return batch, _Request(request_id, outputs)


# -- response encoding -----------------------------------------------------------------


def _bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for value in values:
        encoded = value.encode()
        parts += [struct.pack("<I", len(encoded)), encoded]
    return b"".join(parts)


def encode_response(
    model: str,
    served: ServedModel,
    raw: Array,
    request: _Request,
    headers: dict[str, str],
) -> Response:
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in request.outputs:
        entry: dict[str, Any] = {"name": name}
        data: Any
        if name == LABEL_OUTPUT and served.manifest.outputs[0].name != LABEL_OUTPUT:
            labels: list[str] = list(served.manifest.labels or ())
            names = [labels[i] for i in raw.reshape(len(raw), -1).argmax(axis=1).tolist()]
            entry.update(datatype="BYTES", shape=[len(names)])
            chunk, data = (_bytes_tensor(names) if binary else b""), names
        else:
            array = np.ascontiguousarray(raw, dtype="<f4")
            entry.update(datatype="FP32", shape=list(array.shape))
            chunk, data = (array.tobytes() if binary else b""), array.ravel()
        if binary:
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = data
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": served.version}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(header, 200, headers=headers, media_type="application/json")
    return Response(
        b"".join([header, *chunks]),
        200,
        headers={**headers, HEADER_LENGTH: str(len(header))},
        media_type="application/octet-stream",
    )


# -- routes ----------------------------------------------------------------------------


@router.get("", response_model=ServerMetadata)
async def server_metadata(request: Request) -> Response:
    """Server metadata: name, version and the protocol extensions supported."""
    return _json(
        {"name": "tollgate", "version": request.app.version, "extensions": ["binary_tensor_data"]}
    )


@router.get("/health/live", response_model=ServerLive)
async def server_live() -> Response:
    """Liveness: the process answers."""
    return _json({"live": True})


@router.get(
    "/health/ready",
    response_model=ServerReady,
    responses={503: {"model": ServerReady, "description": "Ledger unreachable or no models"}},
)
async def server_ready(request: Request) -> Response:
    """Readiness: the ledger database answers and at least one model is loaded."""
    ledger_ok = True
    try:
        async with asyncio.timeout(2):
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception:
        ledger_ok = False
    ready = ledger_ok and _registry(request).loaded > 0
    return _json({"ready": ready}, 200 if ready else 503)


async def _model_metadata(request: Request, model: str, version: str | None) -> Response:
    await authenticate_request(request)
    registry = _registry(request)
    return _json(_metadata(registry.get(model, version), registry, model))


async def _model_ready(request: Request, model: str, version: str | None) -> Response:
    await authenticate_request(request)
    _registry(request).get(model, version)
    return _json({"name": model, "ready": True})


_MODEL_ERRORS = _errors(
    {**_AUTH, 400: "The model (variant) is unavailable here", 404: "Unknown model or version"}
)


@router.get(
    "/models/{model}",
    response_model=ModelMetadata,
    responses=_MODEL_ERRORS,
    openapi_extra=BEARER_SECURITY,
)
async def model_metadata(request: Request, model: _MODEL_PATH) -> Response:
    """Model metadata: versions, platform and tensor specs (``-1`` is the batch dim)."""
    return await _answer(_model_metadata(request, model, None))


@router.get(
    "/models/{model}/versions/{version}",
    response_model=ModelMetadata,
    responses=_MODEL_ERRORS,
    openapi_extra=BEARER_SECURITY,
)
async def model_version_metadata(request: Request, model: _MODEL_PATH, version: str) -> Response:
    """Model metadata of one version."""
    return await _answer(_model_metadata(request, model, version))


@router.get(
    "/models/{model}/ready",
    response_model=ModelReady,
    responses=_MODEL_ERRORS,
    openapi_extra=BEARER_SECURITY,
)
async def model_ready(request: Request, model: _MODEL_PATH) -> Response:
    """200 when the model can serve requests; 404 when it does not exist."""
    return await _answer(_model_ready(request, model, None))


@router.get(
    "/models/{model}/versions/{version}/ready",
    response_model=ModelReady,
    responses=_MODEL_ERRORS,
    openapi_extra=BEARER_SECURITY,
)
async def model_version_ready(request: Request, model: _MODEL_PATH, version: str) -> Response:
    """200 when this model version can serve requests."""
    return await _answer(_model_ready(request, model, version))


async def _infer(request: Request, model: str, version: str | None) -> Response:
    # The hot path, like /v1 predict: no dependencies.
    principal = await authenticate_request(request)
    service: InferenceService = request.app.state.inference
    decoded: list[_Request] = []

    async def decode(served: ServedModel) -> Array:
        body = await read_body(request)
        try:
            batch, parsed = decode_request(body, request.headers.get(HEADER_LENGTH), served)
        except Unprocessable as exc:  # V2 clients expect 400 for a bad tensor
            raise V2BadRequest(exc.message, details=exc.details) from None
        decoded.append(parsed)
        return batch

    served, prediction, headers = await service.run(
        principal,
        request_id=request.state.request_id,
        started_ns=request.state.started_ns,
        model=model,
        version=version,
        endpoint="v2.infer",
        decode=decode,
    )
    return encode_response(model, served, prediction.raw, decoded[0], headers)


_BINARY_BODY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with binary outputs the JSON header (its length in "
        f"{HEADER_LENGTH}) followed by the raw output bytes",
        "content": _BINARY_BODY,
    },
    **_errors(
        {
            **_AUTH,
            400: "Malformed request, header or JSON; a bad tensor (shape, datatype, not "
            "finite); an unknown output; the model (variant) is unavailable here",
            402: "The plan's spend cap is reached",
            404: "Unknown model or version",
            413: "Body or batch too large, or a batch over the key's items/minute",
            415: "Compressed request body",
            429: "Rate limit exceeded; see Retry-After and x-ratelimit-* headers",
            503: "The usage ledger is unavailable: no prediction is returned",
        }
    ),
}
_INFER_EXTRA: dict[str, Any] = {
    **BEARER_SECURITY,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(InferRequest.model_json_schema())},
            **_BINARY_BODY,
        },
    },
}


@router.post(
    "/models/{model}/infer",
    response_model=InferResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_EXTRA,
)
async def infer(request: Request, model: _MODEL_PATH) -> Response:
    """Run the model (the default version). Metered like ``/v1``: the response is sent
    only after the request's usage row is committed."""
    return await _answer(_infer(request, model, None))


@router.post(
    "/models/{model}/versions/{version}/infer",
    response_model=InferResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_EXTRA,
)
async def infer_version(request: Request, model: _MODEL_PATH, version: str) -> Response:
    """Run one version of the model."""
    return await _answer(_infer(request, model, version))


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def not_found(request: Request, path: str) -> Response:
    """Unknown ``/v2`` paths answer in the V2 error form."""
    return _json({"error": f"no V2 route {request.method} /v2/{path}"}, 404)
