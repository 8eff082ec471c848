"""Open Inference Protocol V2 endpoints (KServe / Triton HTTP/REST) on the same keys, limits and
metering as ``/v1``.

Routes (``{v}`` is a model version; ``{m}`` a model, ``name`` or ``name:variant``):

* ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``: public, like
  ``/healthz`` and ``/readyz`` (probes carry no key).
* ``GET /v2/models/{m}[/versions/{v}]`` and ``.../ready``: any valid key, like
  ``GET /v1/models/{model}``.
* ``POST /v2/models/{m}[/versions/{v}]/infer``: the ``predict`` scope, metered through
  :meth:`InferenceService.run` with ``endpoint="v2.infer"``.

Data models are in :mod:`app.inference.v2_datamodels`, the tensor codec in
:mod:`app.inference.infer_type`. Tensors: JSON (``data`` flat or nested, row-major) or
the ``binary_tensor_data`` extension (``Inference-Header-Content-Length``). Numeric
datatypes FP16/32/64, INT8-64 and UINT8-64 are accepted and converted to the model's
float32; BOOL, BYTES and BF16 are refused.

Errors on ``/v2`` routes are ``{"error": "<message>"}``, as V2 clients (``tritonclient``)
expect, with the ``/v1`` status codes except that a bad tensor (``/v1``'s 422) is 400, as
Triton and KServe answer. So: 400 malformed request, header, JSON or tensor (wrong shape,
datatype, not finite, unknown output); 401/403 key or scope; 402/429 spend cap and rate
limits (with their headers); 404 unknown model or version; 413 batch or body too large;
415 compressed request bodies; 503 ledger unavailable. A body refused by its
``Content-Length`` alone is answered by the middleware before routing, in the ``/v1`` form.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from app.auth.deps import BEARER_SECURITY, ProtectedRoute, authenticate_request
from app.db.engine import ping
from app.db.session import database
from app.errors import AppError, Unprocessable, read_body
from app.inference.deps import inference_service
from app.inference.deps import registry as model_registry
from app.inference.infer_type import (
    HEADER_LENGTH,
    LABEL_OUTPUT,
    DecodedRequest,
    V2BadRequest,
    decode_request,
    encode_response,
)
from app.inference.predictor import Array
from app.inference.registry import ModelRegistry, ServedModel
from app.inference.v2_datamodels import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    V2Error,
)
from app.limits.policy import RATELIMIT_HEADERS, RETRY_AFTER_HEADER
from app.limits.quota import SPEND_HEADERS

router = APIRouter(prefix="/v2", tags=["inference-v2"], route_class=ProtectedRoute)

PLATFORM = "pytorch"


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
        await ping(database(request).engine)
    except Exception:
        ledger_ok = False
    ready = ledger_ok and model_registry(request).loaded > 0
    return _json({"ready": ready}, 200 if ready else 503)


_MODEL_ERRORS = _errors(
    {**_AUTH, 400: "The model (variant) is unavailable here", 404: "Unknown model or version"}
)


def _ready(served: ServedModel, registry: ModelRegistry, model: str) -> dict[str, Any]:
    return {"name": model, "ready": True}


_View = Callable[[ServedModel, ModelRegistry, str], dict[str, Any]]


async def _model_answer(request: Request, model: str, version: str | None, view: _View) -> Response:
    """The one implementation behind the four model routes (metadata and ready, with and
    without a version): authenticate, find the model, answer with ``view``."""

    async def work() -> Response:
        await authenticate_request(request)
        registry = model_registry(request)
        return _json(view(registry.get(model, version), registry, model))

    return await _answer(work())


def _add_model_routes(
    suffix: str, response_model: type[BaseModel], view: _View, docs: tuple[str, str]
) -> None:
    """``/models/{m}{suffix}`` and ``/models/{m}/versions/{v}{suffix}``, one implementation."""
    kind = suffix.strip("/") or "metadata"

    async def unversioned(request: Request, model: _MODEL_PATH) -> Response:
        return await _model_answer(request, model, None, view)

    async def versioned(request: Request, model: _MODEL_PATH, version: str) -> Response:
        return await _model_answer(request, model, version, view)

    for path, endpoint, name, doc in (
        (f"/models/{{model}}{suffix}", unversioned, f"model_{kind}", docs[0]),
        (
            f"/models/{{model}}/versions/{{version}}{suffix}",
            versioned,
            f"model_version_{kind}",
            docs[1],
        ),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            name=name,
            description=doc,
            response_model=response_model,
            responses=_MODEL_ERRORS,
            openapi_extra=BEARER_SECURITY,
        )


_add_model_routes(
    "",
    ModelMetadata,
    _metadata,
    (
        "Model metadata: versions, platform and tensor specs (``-1`` is the batch dim).",
        "Model metadata of one version.",
    ),
)
_add_model_routes(
    "/ready",
    ModelReady,
    _ready,
    (
        "200 when the model can serve requests; 404 when it does not exist.",
        "200 when this model version can serve requests.",
    ),
)


async def _infer(request: Request, model: str, version: str | None) -> Response:
    # The hot path, like /v1 predict: no dependencies.
    principal = await authenticate_request(request)
    service = inference_service(request)
    decoded: list[DecodedRequest] = []

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
_INFER_ERRORS = _errors(
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
)
_INFER_ERRORS[402]["headers"] = SPEND_HEADERS
_INFER_ERRORS[429]["headers"] = {**RATELIMIT_HEADERS, **RETRY_AFTER_HEADER}
_INFER_ERRORS[503]["headers"] = RETRY_AFTER_HEADER
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON, or with binary outputs the JSON header (its length in "
        f"{HEADER_LENGTH}) followed by the raw output bytes",
        "content": _BINARY_BODY,
        "headers": {**RATELIMIT_HEADERS, **SPEND_HEADERS},
    },
    **_INFER_ERRORS,
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
